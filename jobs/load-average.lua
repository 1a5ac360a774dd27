-- Every minute, on the minute: record the machine's load average, the
-- kind of metric collection a small cron job does.

scheduler.add_job {
  id = "load-average",
  name = "Record the load average",
  trigger = "* * * * *",
  run = function(ctx)
    local f = io.open("/proc/loadavg")
    if not f then
      ctx.log.warn("no /proc/loadavg on this system")
      return
    end
    local one, five, fifteen = f:read("l"):match("^(%S+) (%S+) (%S+)")
    f:close()
    ctx.log.info("load average", {
      one = tonumber(one), five = tonumber(five), fifteen = tonumber(fifteen),
    })
  end,
}
