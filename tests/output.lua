-- busted output handler: the usual terminal report, then one closing
-- line "N passed, N failed" that make test and CI read. Errors count as
-- failures.
return function(options)
  local busted = require "busted"
  local term = require "term"
  local inner_name = term.isatty(io.stdout) and "utfTerminal" or "plainTerminal"
  local handler = require("busted.outputHandlers." .. inner_name)(options)

  busted.subscribe({ "exit" }, function()
    io.stdout:write(("\n%d passed, %d failed\n"):format(
      handler.successesCount, handler.failuresCount + handler.errorsCount))
    io.stdout:flush()
    return nil, true
  end)

  return handler
end
