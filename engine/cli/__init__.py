"""The ``beacon`` command: one entry (``main``), shared option and settings helpers
(``common``), and a module per command group."""
