"""Declarative catalog definitions shipped with SmolQL, installed as ``smolql.catalogs``."""
