"""Built-in model UDFs, installed as ``smolql.udfs``; they register through the public API."""
