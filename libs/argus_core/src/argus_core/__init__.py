"""Argus shared library: bus contract, service runtime, storage, database, identity."""
