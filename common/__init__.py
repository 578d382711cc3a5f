"""telekey shared library: codecs, crypto and protocol cores. No I/O, no asyncio, no settings."""
