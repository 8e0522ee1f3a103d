"""Where state is written: every Redis adapter, every key layout (``keys``), the Lua
scripts and the codec of their replies. Redis errors become StoreError here."""
