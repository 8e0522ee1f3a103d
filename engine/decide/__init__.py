"""Where a decision is made: the pipeline, arbitration, the degraded answer and the
rulebook of test cases. Pure: takes values, returns values; no I/O imports."""
