-- Workload E's clock: a job due as soon as the scheduler runs. It prints
-- how long after the bench started the process it fired (BENCH_EXEC_T,
-- seconds since the epoch) and how many jobs the scheduler then held,
-- then stops the scheduler.
local time = require "moonbeat.time"

scheduler.add_job {
  id = "first-fire",
  trigger = { "date", delay = 0 },
  run = function()
    local since = time.now() - tonumber(os.getenv("BENCH_EXEC_T"))
    io.stdout:write(('{"first_fire_s":%.6f,"jobs":%d}\n')
      :format(since, #scheduler.get_jobs()))
    io.stdout:flush()
    scheduler.shutdown()
  end,
}
