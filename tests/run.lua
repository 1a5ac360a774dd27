-- Runs the specs with busted inside the moonbeat binary, so that they
-- drive the scheduler in-process (`moonbeat lua tests/run.lua`).
package.path = "./?.lua;./?/init.lua;" .. package.path
require "busted.runner" { standalone = false }
