-- Expired-token cleanup: every hour, delete the tokens whose expiry has
-- passed from a sqlite table and log how many went.
--
--   TOKENS_DB=/var/lib/app/tokens.db moonbeat run examples/
--
-- Environment:
--   TOKENS_DB   the sqlite file holding the tokens (default "tokens.db");
--               the table is created when missing:
--               tokens(token TEXT PRIMARY KEY, expires_at INTEGER), with
--               expires_at in seconds since the epoch.
--
-- The DELETE runs on a worker thread, so a large table never stalls the
-- other jobs; the expiry time is a bound parameter, never pasted into
-- the SQL.

local sqlite = require "moonbeat.sqlite"
local time = require "moonbeat.time"

local DB_PATH = os.getenv("TOKENS_DB") or "tokens.db"

-- Opening reads nothing yet; a path that cannot be opened fails the
-- file's load with the reason.
local db = assert(sqlite.open(DB_PATH))

local SCHEMA = [[
  CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS tokens_expires_at ON tokens (expires_at);
]]

scheduler.add_job {
  id = "cleanup-expired-tokens",
  name = "Delete expired tokens",
  trigger = { "interval", hours = 1 },
  timeout = "10m",           -- a stuck DELETE is interrupted, not waited for
  max_instances = 1,         -- never two cleanups at once
  retry = { attempts = 3, backoff = "exponential", delay = "1m" },
  run = function(ctx)
    assert(db:exec(SCHEMA))
    -- A locked or broken database returns nil and a message: raising it
    -- fails this run, which the retry policy above then retries.
    local deleted, err = db:exec("DELETE FROM tokens WHERE expires_at <= ?",
      math.floor(time.now()))
    if not deleted then error("cleanup failed: " .. err, 0) end
    ctx.log.info("expired tokens deleted", { count = deleted })
  end,
}
