"""The batch job: many videos through a pool of workers (local processes or Ray actors), resumably."""
