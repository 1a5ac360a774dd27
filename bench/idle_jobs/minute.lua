-- Workload D's one job: a trivial body once a minute, from the instant
-- bench/idle.sh chose (BENCH_T0, seconds since the epoch).
scheduler.add_job {
  id = "minute",
  trigger = { "interval", minutes = 1,
    start_date = tonumber(os.getenv("BENCH_T0")) },
  run = function() end,
}
