-- A local HTTP server for specs: tests/fixtures/http_server.py on
-- 127.0.0.1, on a free port it picks itself. Nothing leaves the machine.
--
--   local server = http_fixture.start()          -- waits until it listens
--   local url = server.url .. "/json"
--   server:routes { ["/health"] = { status = 500 } }  -- canned answers
--   server:requests()                            -- what it was asked
--   server:stop()                                -- kills it, removes files

local core = require "moonbeat.core"
local json = require "moonbeat.json"
local support = require "tests.support"

local M = {}
local S = {}
S.__index = S

local read = support.read

-- This process's id (the server stops by itself once it is gone).
local function own_pid()
  return tonumber(read("/proc/self/stat"):match("^(%d+)"))
end

-- A zombie (ended, not yet reaped by whoever adopted it) counts as gone.
local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

-- opts.tls = { cert, key } serves HTTPS.
function M.start(opts)
  opts = opts or {}
  local dir = support.tempdir()
  local self = setmetatable({
    dir = dir,
    port_file = dir .. "/port",
    routes_file = dir .. "/routes.json",
    log_file = dir .. "/requests.log",
  }, S)
  local args = {
    "/usr/bin/python3", "tests/fixtures/http_server.py",
    "--port-file", self.port_file, "--routes", self.routes_file,
    "--log", self.log_file, "--parent", tostring(own_pid()),
  }
  if opts.tls then
    args[#args + 1] = "--tls"
    args[#args + 1] = opts.tls[1]
    args[#args + 1] = opts.tls[2]
  end
  for i, a in ipairs(args) do args[i] = support.quote(a) end
  local cmd = table.concat(args, " ") .. " >" .. support.quote(dir .. "/out")
    .. " 2>&1 & echo $! >" .. support.quote(dir .. "/pid")
  assert(os.execute(cmd))
  self.pid = tonumber(read(dir .. "/pid"))
  -- Waiting for a process to listen, not for a schedule.
  for _ = 1, 200 do
    local port = tonumber(read(self.port_file) or "")
    if port then
      self.port = port
      break
    end
    if not alive(self.pid) then break end
    os.execute("sleep 0.05")
  end
  if not self.port then
    local out = read(dir .. "/out") or ""
    self:stop()
    error("the test HTTP server did not start: " .. out)
  end
  self.url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. self.port
  return self
end

-- Canned answers, by path: { status, json | body, content_type,
-- headers, delay }. Replaces the previous set.
function S:routes(routes)
  support.write(self.routes_file, json.encode(routes))
end

-- The requests the server received, oldest first: {method, path, query,
-- body}.
function S:requests()
  local list = {}
  for line in (read(self.log_file) or ""):gmatch("[^\n]+") do
    list[#list + 1] = json.decode(line)
  end
  return list
end

-- Requests for path.
function S:count(path)
  local n = 0
  for _, r in ipairs(self:requests()) do
    if r.path == path then n = n + 1 end
  end
  return n
end

function S:stop()
  if self.pid and alive(self.pid) then
    os.execute("kill " .. self.pid)
    for _ = 1, 100 do
      if not alive(self.pid) then break end
      os.execute("sleep 0.05")
    end
    if alive(self.pid) then os.execute("kill -9 " .. self.pid) end
  end
  support.remove_tree(self.dir)
end

-- Open file descriptors of this process (a leak check).
function M.open_fds()
  local names = assert(core.listdir("/proc/self/fd"))
  return #names
end

-- A self-signed certificate for 127.0.0.1 in dir: returns cert, key.
function M.make_cert(dir)
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local out, code = support.sh(("openssl req -x509 -newkey rsa:2048 -nodes "
    .. "-keyout %s -out %s -days 2 -subj /CN=127.0.0.1 "
    .. "-addext subjectAltName=IP:127.0.0.1"):format(
      support.quote(key), support.quote(cert)))
  assert(code == 0, out)
  return cert, key
end

return M
