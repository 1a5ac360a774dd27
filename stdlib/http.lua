-- moonbeat.http: HTTP and HTTPS requests from a job's run. The request
-- waits on the scheduler's loop (libcurl's multi-socket interface, see
-- host/http.c), so other jobs keep running meanwhile; connections are
-- kept and reused between requests and runs.
--
--   local res, err, code = http.get("http://127.0.0.1:8080/health")
--
-- A response of any status is a response ({status, headers, body, json,
-- url, ok}); a failure to get one (refused connection, DNS, TLS,
-- timeout, a body over max_body) returns nil, a message and a code.
-- A malformed request table raises.

local core = require "moonbeat.core.http"
local json = require "moonbeat.json"
local duration = require "mb.duration"

local M = {}

-- A request's defaults, for any field it leaves out.
M.DEFAULT_TIMEOUT = 30
M.DEFAULT_MAX_BODY = 16 * 1024 * 1024
M.DEFAULT_MAX_REDIRECTS = 10

local FIELDS = {
  method = "string", url = "string", headers = "table", query = "table",
  body = "string", json = true, timeout = true, follow_redirects = "boolean",
  max_redirects = "number", verify_tls = "boolean", ca_file = "string",
  max_body = "number",
}

local function fail(what, msg, level)
  error(what .. ": " .. msg, level + 1)
end

-- Percent-encode all but RFC 3986's unreserved characters.
local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end))
end

local function query_value(what, key, v, level)
  local kind = type(v)
  if kind == "string" then return v end
  if kind == "number" or kind == "boolean" then return tostring(v) end
  fail(what, ("query.%s: expected a string, number, boolean or a list of "
    .. "them, got %s"):format(key, kind), level + 1)
end

-- {b = 2, a = {1, 3}} -> "a=1&a=3&b=2": keys sorted, so a request's URL
-- does not depend on table order.
local function encode_query(what, query, level)
  local keys = {}
  for k in pairs(query) do
    if type(k) ~= "string" then
      fail(what, ("query: keys must be strings, got %s"):format(type(k)),
        level + 1)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    local list = type(v) == "table" and v or { v }
    for _, item in ipairs(list) do
      parts[#parts + 1] = escape(k) .. "=" ..
        escape(query_value(what, k, item, level + 1))
    end
  end
  return table.concat(parts, "&")
end

local function with_query(url, query)
  if query == "" then return url end
  local base, fragment = url:match("^([^#]*)(#.*)$")
  base = base or url
  local sep = base:find("?", 1, true) and "&" or "?"
  return base .. sep .. query .. (fragment or "")
end

local function header_lines(what, headers, level)
  local lines, has = {}, {}
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      fail(what, ("headers: %q is not a header name"):format(tostring(name)),
        level + 1)
    end
    local kind = type(value)
    if kind ~= "string" and kind ~= "number" then
      fail(what, ("headers.%s: expected a string or number, got %s")
        :format(name, kind), level + 1)
    end
    value = tostring(value)
    if value:find("[\r\n%z]") then
      fail(what, ("headers.%s: a value cannot hold a line break")
        :format(name), level + 1)
    end
    has[name:lower()] = true
    -- curl drops a header given as "Name:" with nothing after it; "Name;"
    -- is its spelling for an empty one.
    lines[#lines + 1] = value == "" and name .. ";" or name .. ": " .. value
  end
  table.sort(lines)
  return lines, has
end

local function is_json(content_type)
  if not content_type then return false end
  local mime = content_type:match("^%s*([^;%s]+)")
  mime = mime and mime:lower() or ""
  return mime == "application/json" or mime:match("^application/.+%+json$")
    ~= nil
end

-- The table host/http.c takes, from a request table; raises on misuse.
local function build(what, opts, level)
  if type(opts) ~= "table" then
    fail(what, ("expected a request table, got %s"):format(type(opts)),
      level + 1)
  end
  for k, v in pairs(opts) do
    local want = FIELDS[k]
    if not want then
      fail(what, ("unknown field '%s'"):format(tostring(k)), level + 1)
    end
    if want ~= true and type(v) ~= want then
      fail(what, ("%s: expected a %s, got %s"):format(k, want, type(v)),
        level + 1)
    end
  end
  if not opts.url then fail(what, "url: missing", level + 1) end
  if opts.body and opts.json ~= nil then
    fail(what, "body and json: give one or the other", level + 1)
  end
  local method = (opts.method or "GET"):upper()
  if not method:match("^[A-Z]+$") or #method > 20 then
    fail(what, ("method: '%s' is not an HTTP method"):format(opts.method),
      level + 1)
  end
  local lines, has = header_lines(what, opts.headers or {}, level + 1)
  local body = opts.body
  if opts.json ~= nil then
    local ok, text = pcall(json.encode, opts.json)
    if not ok then fail(what, "json: " .. text:gsub("^json%.encode: ", ""), level + 1) end
    body = text
    if not has["content-type"] then
      lines[#lines + 1] = "Content-Type: application/json"
    end
  end
  local timeout = M.DEFAULT_TIMEOUT
  if opts.timeout ~= nil then
    local seconds, err = duration.parse(opts.timeout)
    if not seconds then fail(what, "timeout: " .. err, level + 1) end
    timeout = seconds
  end
  local max_body = opts.max_body or M.DEFAULT_MAX_BODY
  if math.type(max_body) ~= "integer" or max_body < 1 or max_body > 2^31 - 1 then
    fail(what, ("max_body: expected a whole number of bytes from 1 to "
      .. "2147483647, got %s"):format(tostring(max_body)), level + 1)
  end
  local max_redirects = opts.max_redirects or M.DEFAULT_MAX_REDIRECTS
  if math.type(max_redirects) ~= "integer" or max_redirects < 0 then
    fail(what, ("max_redirects: expected a whole number >= 0, got %s")
      :format(tostring(max_redirects)), level + 1)
  end
  return {
    method = method,
    url = with_query(opts.url, encode_query(what, opts.query or {}, level + 1)),
    headers = lines,
    body = body,
    timeout = timeout,
    follow = opts.follow_redirects ~= false,
    max_redirects = max_redirects,
    verify = opts.verify_tls ~= false,
    ca_file = opts.ca_file,
    max_body = max_body,
  }
end

local function send(req)
  local status, headers, body, url = core.request(req)
  if not status then return nil, headers, body end
  local res = {
    status = status, headers = headers, body = body, url = url,
    ok = status >= 200 and status < 300,
  }
  if is_json(headers["content-type"]) then
    local value, err = json.decode(body)
    if err then res.json_error = err else res.json = value end
  end
  return res
end

-- request{method, url, headers, query, body, json, timeout,
-- follow_redirects, max_redirects, verify_tls, ca_file, max_body}.
function M.request(opts)
  return send(build("http.request", opts, 2))
end

local function verb(method, name)
  local what = "http." .. name
  return function(url, opts)
    if type(url) ~= "string" then
      fail(what, ("url: expected a string, got %s"):format(type(url)), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
      fail(what, ("expected an options table, got %s"):format(type(opts)), 2)
    end
    local req = {}
    for k, v in pairs(opts or {}) do
      if k == "url" or k == "method" then
        fail(what, ("%s: set by %s itself"):format(k, what), 2)
      end
      req[k] = v
    end
    req.url, req.method = url, method
    return send(build(what, req, 2))
  end
end

-- get(url, opts), post(url, opts), ...: opts as for request, without
-- method and url.
M.get = verb("GET", "get")
M.post = verb("POST", "post")
M.put = verb("PUT", "put")
M.delete = verb("DELETE", "delete")

return M
