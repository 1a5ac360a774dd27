-- The run of the stored jobs that workload E starts with, by reference
-- ("bench.startup_jobs.noop"), as a store keeps jobs added at run time.
return { noop = function() end }
