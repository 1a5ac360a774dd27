-- Nightly database backup: at 01:00 dump a SQLite database with the
-- sqlite3 command-line tool, store the dump as a dated file, and keep
-- only the newest seven.
--
--   BACKUP_DB=app.db BACKUP_DIR=backups/ moonbeat run examples/
--
-- Settings, from the environment:
--   BACKUP_DB    the database file (default /var/lib/app/app.db)
--   BACKUP_DIR   where backup-YYYYMMDD-HHMMSS.sql files go (the
--                scheduled time in UTC), made if missing
--                (default /var/backups/app)
--   BACKUP_KEEP  how many backups to keep (default 7)
--   BACKUP_TZ    the zone 01:00 is read in (default: the scheduler's,
--                --timezone)
--
-- The dump runs without a shell (exec.run), read-only, and may take 30
-- minutes at most; a dump that fails (sqlite3 exits non-zero) fails the
-- run, is retried twice, and never replaces a good backup or prunes old
-- ones. The whole dump passes through memory, so this suits databases
-- up to a few hundred megabytes; for larger ones let the command write
-- the file itself (sqlite3's .backup) and keep the pruning.

local exec = require "moonbeat.exec"
local fs = require "moonbeat.fs"
local log = require "moonbeat.log"
local time = require "moonbeat.time"

local DB = os.getenv("BACKUP_DB") or "/var/lib/app/app.db"
local DIR = os.getenv("BACKUP_DIR") or "/var/backups/app"
local KEEP = math.tointeger(tonumber(os.getenv("BACKUP_KEEP") or "7"))
local ZONE = os.getenv("BACKUP_TZ")
assert(KEEP and KEEP >= 1, "BACKUP_KEEP must be a whole number >= 1")

-- Dumps larger than this are refused rather than stored cut short.
local MAX_DUMP = 512 * 1024 * 1024

local PATTERN = "^backup%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%.sql$"

-- Remove all but the newest `keep` backups; the names sort by time.
local function prune(keep)
  local names = assert(fs.list(DIR))
  local backups = {}
  for _, name in ipairs(names) do
    if name:match(PATTERN) then backups[#backups + 1] = name end
  end
  table.sort(backups)
  local removed = 0
  for i = 1, #backups - keep do
    assert(fs.remove(DIR .. "/" .. backups[i]))
    removed = removed + 1
  end
  return removed
end

scheduler.add_job {
  id = "db-backup",
  name = "Back up the database",
  trigger = { "cron", hour = 1, minute = 0, timezone = ZONE },
  timeout = "45m",
  retry = { attempts = 3, delay = "5m" },
  run = function(ctx)
    local res, err = exec.run {
      "sqlite3", "-readonly", DB, ".dump",
      timeout = "30m", max_output = MAX_DUMP,
    }
    if not res then error("cannot run sqlite3: " .. err) end
    if res.code ~= 0 then
      error(("the dump failed (%s): %s"):format(
        res.code and ("exit " .. res.code) or ("signal " .. res.signal),
        (res.stderr:gsub("%s+$", ""))))
    end
    if res.truncated then error("the dump is larger than " .. MAX_DUMP .. " bytes") end

    assert(fs.mkdir(DIR))
    -- "2026-01-02T01:00:00+00:00" -> "20260102-010000"
    local stamp = time.format(ctx.scheduled_time):gsub("[-:]", "")
      :gsub("T", "-"):sub(1, 15)
    local path = ("%s/backup-%s.sql"):format(DIR, stamp)
    -- Atomic: a crash mid-write never leaves a truncated backup.
    assert(fs.write(path, res.stdout))
    local removed = prune(KEEP)
    log.info("backup written", { file = path, bytes = #res.stdout,
      pruned = removed })
  end,
}
