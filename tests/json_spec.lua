-- moonbeat.json: lua-cjson underneath, with nulls, integers and errors
-- as the README describes.
local json = require "moonbeat.json"

describe("moonbeat.json", function()
  it("encodes tables, lists and json.null", function()
    local text = json.encode({ list = { 1, 2, "x" }, none = json.null })
    assert.same({ list = { 1, 2, "x" }, none = json.null }, json.decode(text))
    assert.equal("{}", json.encode({}))
    assert.equal('"\\n"', json.encode("\n"))
  end)

  it("decodes null as json.null, not nil", function()
    local v = json.decode('{"a":null,"b":[null,1]}')
    assert.equal(json.null, v.a)
    assert.equal(json.null, v.b[1])
  end)

  it("decodes whole numbers as integers and keeps fractions", function()
    local v = json.decode('{"n":42,"f":2.5,"e":3e2,"neg":-7}')
    assert.equal("integer", math.type(v.n))
    assert.equal("integer", math.type(v.e))
    assert.equal(300, v.e)
    assert.equal(2.5, v.f)
    assert.equal(-7, v.neg)
  end)

  it("keeps integers longer than 14 digits exact", function()
    local t = { us = 1763786084123456, id = -123456789012345678, small = 99 }
    local text = json.encode(t)
    assert.truthy(text:find('"us":1763786084123456', 1, true))
    assert.truthy(text:find('"id":-123456789012345678', 1, true))
    assert.equal(1763786084123456, json.decode(text).us)
    assert.equal("integer", math.type(t.us)) -- the caller's table is kept
  end)

  it("returns nil and a message for text that is not JSON", function()
    local v, err = json.decode("{bad")
    assert.is_nil(v)
    assert.matches("^json.decode: expected", err)
  end)

  it("raises on misuse: a function, a cycle, a sparse list, a non-string", function()
    assert.error_matches(function() json.encode({ f = print }) end,
      "json.encode: cannot encode function")
    local cyc = {}
    cyc.self = cyc
    assert.error_matches(function() json.encode(cyc) end, "nesting")
    local cyc_big = { n = 1e15 // 1 }
    cyc_big.self = cyc_big
    assert.error_matches(function() json.encode(cyc_big) end, "nesting")
    assert.error_matches(function() json.encode({ [1] = 1, [1000] = 2 }) end,
      "sparse")
    assert.error_matches(function() json.encode(0 / 0) end, "json.encode")
    assert.error_matches(function() json.decode(5) end,
      "json.decode: expected a string, got number")
  end)
end)
