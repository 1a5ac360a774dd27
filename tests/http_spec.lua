-- moonbeat.http against a local server (tests/fixtures/http_server.py
-- on 127.0.0.1) that the spec starts and stops. Runs wait for real I/O
-- while virtual time stands still (h:settle); nothing sleeps to wait
-- for a schedule, and nothing reaches beyond the machine.
local harness = require "tests.harness"
local http_fixture = require "tests.http_fixture"
local support = require "tests.support"
local http = require "moonbeat.http"
local http_core = require "moonbeat.core.http"

describe("moonbeat.http", function()
  local server, h, s

  setup(function() server = http_fixture.start() end)
  teardown(function() server:stop() end)

  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  -- Run fn(ctx) as a job's run and return what it returned (or raise
  -- what it raised).
  local function run(fn, extra) return h:call(fn, extra) end

  describe("responses", function()
    it("decodes a JSON response and gives status, headers, body and url", function()
      local res = run(function() return http.get(server.url .. "/json") end)
      assert.equal(200, res.status)
      assert.is_true(res.ok)
      assert.equal("application/json", res.headers["content-type"])
      assert.same({ hello = "world", n = 42, list = { 1, 2, 3 } }, res.json)
      assert.equal('{"hello": "world", "n": 42, "list": [1, 2, 3]}', res.body)
      assert.equal(server.url .. "/json", res.url)
    end)

    it("leaves json nil for other content and names headers in lower case", function()
      local res = run(function() return http.get(server.url .. "/text") end)
      assert.equal("just text", res.body)
      assert.is_nil(res.json)
      assert.equal("1", res.headers["x-one"])
      assert.equal("a=1", res.headers["set-cookie"])
      assert.equal("9", res.headers["content-length"])
    end)

    it("treats an HTTP 500 as a response, not an error", function()
      local res, err = run(function() return http.get(server.url .. "/status/500") end)
      assert.is_nil(err)
      assert.equal(500, res.status)
      assert.is_false(res.ok)
      assert.equal("status 500", res.body)
    end)

    it("reports JSON that does not parse in json_error", function()
      local res = run(function() return http.get(server.url .. "/bad-json") end)
      assert.equal(200, res.status)
      assert.is_nil(res.json)
      assert.matches("^json%.decode: ", res.json_error)
      assert.equal("{not json", res.body)
    end)
  end)

  describe("requests", function()
    it("send method, query, headers and a JSON body", function()
      local res = run(function()
        return http.request {
          method = "patch", url = server.url .. "/echo",
          query = { b = "two words", a = { 1, 2 }, c = true },
          headers = { ["X-Token"] = "abc", Accept = "application/json" },
          json = { id = 7, tags = { "x" } },
        }
      end)
      local echo = res.json
      assert.equal("PATCH", echo.method)
      assert.equal("a=1&a=2&b=two%20words&c=true", echo.query)
      assert.equal("abc", echo.headers["x-token"])
      assert.equal("application/json", echo.headers["accept"])
      assert.equal("application/json", echo.headers["content-type"])
      assert.equal("moonbeat", echo.headers["user-agent"])
      assert.same({ id = 7, tags = { "x" } }, require("moonbeat.json").decode(echo.body))
    end)

    it("post, put and delete with the method they name", function()
      local post, put, del = run(function()
        return http.post(server.url .. "/echo", { body = "a=1" }),
          http.put(server.url .. "/echo?x=1", { json = { 1 } }),
          http.delete(server.url .. "/echo")
      end)
      assert.equal("POST", post.json.method)
      assert.equal("a=1", post.json.body)
      assert.equal("PUT", put.json.method)
      assert.equal("x=1", put.json.query)
      assert.equal("[1]", put.json.body)
      assert.equal("DELETE", del.json.method)
      assert.equal("", del.json.body)
    end)

    it("keeps the caller's content type for a JSON body", function()
      local res = run(function()
        return http.post(server.url .. "/echo", {
          json = {}, headers = { ["Content-Type"] = "application/vnd.x+json" },
        })
      end)
      assert.equal("application/vnd.x+json", res.json.headers["content-type"])
      assert.equal("{}", res.json.body)
    end)

    it("adds a query to a URL that already has one", function()
      local res = run(function()
        return http.get(server.url .. "/echo?a=1", { query = { b = "x/y" } })
      end)
      assert.equal("a=1&b=x%2Fy", res.json.query)
    end)
  end)

  describe("redirects", function()
    it("are followed by default", function()
      local res = run(function() return http.get(server.url .. "/redirect/3") end)
      assert.equal(200, res.status)
      assert.equal(server.url .. "/json", res.url)
      assert.equal("world", res.json.hello)
    end)

    it("are returned as they are with follow_redirects = false", function()
      local res = run(function()
        return http.get(server.url .. "/redirect/1", { follow_redirects = false })
      end)
      assert.equal(302, res.status)
      assert.equal("/json", res.headers.location)
    end)

    it("give up after max_redirects with code 'redirects'", function()
      local res, err, code = run(function()
        return http.get(server.url .. "/loop", { max_redirects = 3 })
      end)
      assert.is_nil(res)
      assert.equal("redirects", code)
      assert.matches("^GET " .. server.url:gsub("%p", "%%%0") .. "/loop: ", err)
    end)
  end)

  describe("failures from outside", function()
    it("return nil, a message and 'connect' for a refused connection", function()
      local res, err, code = run(function() return http.get("http://127.0.0.1:1/x") end)
      assert.is_nil(res)
      assert.equal("connect", code)
      assert.matches("^GET http://127%.0%.0%.1:1/x: .*127%.0%.0%.1 port 1", err)
    end)

    it("return 'timeout' when the answer is later than timeout, with virtual time standing still", function()
      local res, err, code = run(function()
        return http.get(server.url .. "/slow?seconds=5", { timeout = "200ms" })
      end)
      assert.is_nil(res)
      assert.equal("timeout", code)
      assert.matches("^GET .*/slow%?seconds=5: .*timed out", err)
    end)

    it("return 'too_large' for a body over max_body, announced or not", function()
      local results = { run(function()
        local a = { http.get(server.url .. "/big?bytes=2000", { max_body = 1000 }) }
        local b = { http.get(server.url .. "/stream?bytes=100000", { max_body = 1000 }) }
        local c = http.get(server.url .. "/stream?bytes=100000", { max_body = 100000 })
        return a, b, c
      end) }
      local a, b, c = results[1], results[2], results[3]
      assert.is_nil(a[1])
      assert.equal("too_large", a[3])
      assert.matches("larger than max_body %(1000 bytes%)", a[2])
      assert.is_nil(b[1])
      assert.equal("too_large", b[3])
      assert.equal(100000, #c.body)
    end)

    it("refuse schemes other than http and https with code 'url'", function()
      local res, _, code = run(function() return http.get("file:///etc/passwd") end)
      assert.is_nil(res)
      assert.equal("url", code)
    end)
  end)

  describe("connections", function()
    it("are reused within a run and across runs", function()
      local a, b = run(function()
        return http.get(server.url .. "/port"), http.get(server.url .. "/port")
      end)
      local c = run(function() return http.get(server.url .. "/port") end)
      assert.equal(a.json.port, b.json.port)
      assert.equal(a.json.port, c.json.port)
    end)

    it("serve many runs waiting at once", function()
      local done, ended = {}, 0
      for i = 1, 20 do
        s.add_job { id = "many" .. i, trigger = { "date", delay = 1 }, run = function()
          done[i] = http.get(server.url .. "/slow?seconds=0.2").body
          ended = ended + 1
        end }
      end
      h:advance(1)
      assert.equal(20, h:stats().runs)
      assert.is_true(h:settle(function() return ended == 20 end))
      for i = 1, 20 do assert.equal("slow answer", done[i]) end
    end)

    it("leave the loop free for other jobs while a request waits", function()
      local answered
      s.add_job { id = "waits", trigger = { "date", delay = 1 }, run = function()
        answered = http.get(server.url .. "/slow?seconds=1").body
      end }
      local fires = h:record("tick", { "interval", seconds = 10 })
      h:advance("1m")
      assert.same({ 10, 20, 30, 40, 50, 60 }, fires)
      assert.is_nil(answered)
      assert.is_true(h:settle(function() return answered ~= nil end))
      assert.equal("slow answer", answered)
    end)
  end)

  describe("cancellation", function()
    local function wait_in_flight(path, n)
      assert.is_true(h:settle(function() return server:count(path) >= n end))
    end

    it("removes the transfer when the run times out, leaking nothing", function()
      h:close()
      collectgarbage()
      local fds = http_fixture.open_fds()
      h = harness.new()
      s = h.scheduler
      local after = false
      s.add_job { id = "slow", trigger = { "date", delay = 1 }, timeout = "5s", run = function()
        http.get(server.url .. "/slow?seconds=30&t=1")
        after = true
      end }
      h:advance(1)
      wait_in_flight("/slow", 1)
      assert.equal(1, http_core.stats().transfers)
      h:advance(5)
      assert.equal(0, h:stats().runs)
      assert.equal(0, http_core.stats().transfers)
      assert.equal(0, http_core.stats().sockets)
      assert.is_false(after)
      assert.equal("timed out after 5s", h:logged("run timed out")[1].fields.error)
      h:close()
      assert.equal(0, http_core.stats().loops)
      assert.equal(fds, http_fixture.open_fds())
      h = harness.new()
      s = h.scheduler
    end)

    it("removes transfers when the scheduler shuts down without waiting", function()
      for i = 1, 3 do
        s.add_job { id = "s" .. i, trigger = { "date", delay = 1 }, run = function()
          http.get(server.url .. "/slow?seconds=30&t=2")
        end }
      end
      local before = server:count("/slow")
      h:advance(1)
      wait_in_flight("/slow", before + 3)
      assert.equal(3, http_core.stats().transfers)
      s.shutdown { wait = false }
      assert.equal(0, http_core.stats().transfers)
      assert.equal(3, #h:logged("run cancelled"))
    end)

    it("ends transfers still in flight when the scheduler closes", function()
      s.add_job { id = "open", trigger = { "date", delay = 1 }, run = function()
        http.get(server.url .. "/slow?seconds=30&t=3")
      end }
      local before = server:count("/slow")
      h:advance(1)
      wait_in_flight("/slow", before + 1)
      h:close()
      assert.equal(0, http_core.stats().transfers)
      assert.equal(0, http_core.stats().loops)
      assert.equal(0, http_core.stats().sockets)
      h = harness.new()
      s = h.scheduler
    end)
  end)

  describe("misuse", function()
    it("raises for a URL that is not a string", function()
      local ok, err = pcall(http.get, 42)
      assert.is_false(ok)
      assert.matches("http%.get: url: expected a string, got number$", err)
    end)

    it("raises for an unknown field, naming it", function()
      assert.has_error(function() http.request { url = "http://x/", tmeout = 1 } end,
        "http.request: unknown field 'tmeout'")
    end)

    it("raises for a body and json together", function()
      assert.has_error(function() http.post("http://x/", { body = "a", json = {} }) end,
        "http.post: body and json: give one or the other")
    end)

    it("raises for a header value with a line break", function()
      assert.has_error(function()
        http.get("http://x/", { headers = { ["X-A"] = "1\r\nX-B: 2" } })
      end, "http.get: headers.X-A: a value cannot hold a line break")
    end)

    it("raises for a bad timeout, naming the field", function()
      assert.has_error(function() http.get("http://x/", { timeout = "soon" }) end,
        "http.get: timeout: 'soon' is not a duration (expected seconds, or a "
        .. 'string such as "90s", "5m", "1h30m")')
    end)

    it("raises for a bad max_body", function()
      assert.has_error(function() http.get("http://x/", { max_body = 0 }) end,
        "http.get: max_body: expected a whole number of bytes from 1 to 2147483647, got 0")
    end)

    it("raises outside a job's run", function()
      assert.has_error(function() http.get(server.url .. "/json") end,
        "http: only a job's run can make a request (this code is not running "
        .. "as a job's run function)")
    end)

    it("names the caller's line", function()
      local ok, err = pcall(function() http.get(false) end)
      assert.is_false(ok)
      assert.matches("^tests/http_spec%.lua:%d+: http%.get: url", err)
    end)
  end)
end)

describe("moonbeat.http over TLS", function()
  local server, dir, cert, h, s

  setup(function()
    dir = support.tempdir()
    local key
    cert, key = http_fixture.make_cert(dir)
    server = http_fixture.start { tls = { cert, key } }
  end)
  teardown(function()
    server:stop()
    support.remove_tree(dir)
  end)
  before_each(function()
    h = harness.new()
    s = h.scheduler
  end)
  after_each(function() h:close() end)

  local function run(fn)
    local out
    s.add_job { id = "tls", trigger = { "date", delay = 1 },
      run = function() out = table.pack(fn()) end }
    h:advance(1)
    assert(h:settle(function() return out ~= nil end))
    return table.unpack(out, 1, out.n)
  end

  it("verifies the certificate by default", function()
    local res, err, code = run(function() return http.get(server.url .. "/json") end)
    assert.is_nil(res)
    assert.equal("tls", code)
    assert.matches("certificate", err)
  end)

  it("accepts a certificate signed by ca_file", function()
    local res = run(function()
      return http.get(server.url .. "/json", { ca_file = cert })
    end)
    assert.equal(200, res.status)
    assert.equal("world", res.json.hello)
  end)

  it("skips verification only when asked with verify_tls = false", function()
    local res = run(function()
      return http.get(server.url .. "/json", { verify_tls = false })
    end)
    assert.equal(200, res.status)
  end)
end)

describe("libcurl", function()
  local support = require "tests.support"

  it("is loaded only when a job first requires moonbeat.http", function()
    local dir = support.tempdir()
    support.write(dir .. "/probe.lua", [[
      local function mapped()
        for line in io.lines("/proc/self/maps") do
          if line:find("libcurl", 1, true) then return true end
        end
        return false
      end
      local before = mapped()
      require "moonbeat.http"
      print(("before=%s after=%s"):format(before, mapped()))
    ]])
    local out = support.sh(support.quote(support.BIN) .. " lua " .. support.quote(dir .. "/probe.lua"))
    support.remove_tree(dir)
    assert.matches("before=false after=true", out, 1, true)
  end)
end)
