-- Helpers for specs that need files or the moonbeat process itself.
local M = {}

M.BIN = os.getenv("MOONBEAT_BIN") or "build/moonbeat"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

-- A fresh temporary directory; files = { ["name.lua"] = "source" }.
function M.tempdir(files)
  local p = io.popen("mktemp -d")
  local dir = p:read("l")
  p:close()
  for name, text in pairs(files or {}) do M.write(dir .. "/" .. name, text) end
  return dir
end

-- The whole file at path (bytes as they are), or nil when it cannot be
-- read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

function M.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function M.remove_tree(dir)
  os.execute("rm -rf " .. shell_quote(dir))
end

-- Every shell spawned here gets a runtime directory of its own, removed
-- when the shell ends: schedulers that specs start never meet on the
-- default control socket (another spec's, or one the user runs).
local OWN_RUNTIME_DIR = "XDG_RUNTIME_DIR=$(mktemp -d) && export XDG_RUNTIME_DIR"
  .. " && trap 'rm -rf \"$XDG_RUNTIME_DIR\"' EXIT\n"

-- Run a shell command; return its output and exit code.
function M.sh(cmd)
  local p = io.popen(OWN_RUNTIME_DIR .. cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local body, code = out:match("^(.*)exit=(%d+)\n$")
  return body, tonumber(code)
end

-- Shell lines sending signal (a name, or a list sent in turn, a moment
-- apart so the process can act on each) to $pid.
local function signal_lines(signal)
  if type(signal) ~= "table" then signal = { signal or "INT" } end
  local lines = {}
  for i, name in ipairs(signal) do
    if i > 1 then lines[#lines + 1] = "sleep 0.3" end
    lines[#lines + 1] = "kill -" .. name .. " $pid"
  end
  return table.concat(lines, "\n")
end

-- Start `moonbeat ARGS` in the background, wait (at most 20 s of real
-- time) until its output contains `until_text` (and the shell condition
-- `also` holds, if given), send it `signal`, and return its output and
-- exit status. This waits for a process, never for a schedule: the jobs
-- used fire at once.
function M.run_until(args, until_text, signal, also)
  local out = os.tmpname()
  local script = table.concat({
    OWN_RUNTIME_DIR,
    shell_quote(M.BIN) .. " " .. args .. " >" .. out .. " 2>&1 &",
    "pid=$!",
    "i=0",
    "ready() { grep -qF -- " .. shell_quote(until_text) .. " " .. out
      .. (also and " && { " .. also .. "; }" or "") .. "; }",
    "while [ $i -lt 200 ] && ! ready; do sleep 0.1; i=$((i+1)); done",
    signal_lines(signal),
    "wait $pid 2>/dev/null",
    "echo \"exit=$?\"",
  }, "\n")
  local p = io.popen(script)
  local status = p:read("a")
  p:close()
  local f = io.open(out)
  local text = f:read("a")
  f:close()
  os.remove(out)
  return text, tonumber(status:match("exit=(%d+)"))
end

return M
