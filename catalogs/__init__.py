"""Catalog sources (connectors, such as the local folder/glob source in ``local.py``) and the
declarative catalog definitions shipped with SmolQL, installed as ``smolql.catalogs``."""
