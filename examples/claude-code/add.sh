#!/bin/sh
# Register autoopt with Claude Code. Run from the root of the project that should see it.
# --scope project writes ./.mcp.json (the shape of examples/claude-code/.mcp.json);
# use --scope local (the default, private to you) or --scope user (all your projects) instead.
# All options go before the server name; everything after `--` is the server command.
set -eu
claude mcp add --transport stdio --scope project \
  --env AUTOOPT_WORKSPACE=/ABSOLUTE/PATH/TO/autoopt \
  autoopt -- /ABSOLUTE/PATH/TO/autoopt/.venv/bin/autoopt serve

# HTTP instead (start `autoopt serve --http --port 8765` yourself first):
# claude mcp add --transport http --scope project autoopt http://127.0.0.1:8765/mcp
