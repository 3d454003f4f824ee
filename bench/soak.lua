-- wrk script for bench/soak.sh: builds each request afresh.
--
--   SOAK_EXPORT_SHARE (0.01)     GET /export/<slug>: the upstreams answer about 1 MiB of JSON
--   SOAK_POST_SHARE (0.05)       POST /articles/<slug>/comments with a gzip-compressed JSON body
--                                (Content-Encoding: gzip), read from the files SOAK_PAYLOADS lists
--   SOAK_BIG_POST_SHARE (0.1)    share of those POSTs whose body decodes to a few MiB
--   SOAK_CANONICAL_SHARE (0.2)   requests with a Canonical-Resource header, one of SOAK_RESOURCES (5000) names
--   the rest                     GET /articles/<slug> and GET /users/<name>/repos, half and half
--
-- Paths come from 100 000 distinct slugs (50 000 articles, 50 000 users) made of words without digits, so that
-- shadowdiff cannot take them for identifiers and has to learn {param} templates. The done() hook prints one
-- RESULT line (latencies in microseconds) and one MIX line (requests built per kind) for the report.

local export_share = tonumber(os.getenv("SOAK_EXPORT_SHARE") or "") or 0.01
local post_share = tonumber(os.getenv("SOAK_POST_SHARE") or "") or 0.05
local big_post_share = tonumber(os.getenv("SOAK_BIG_POST_SHARE") or "") or 0.1
local canonical_share = tonumber(os.getenv("SOAK_CANONICAL_SHARE") or "") or 0.2
local resources = tonumber(os.getenv("SOAK_RESOURCES") or "") or 5000
local payload_list = os.getenv("SOAK_PAYLOADS")

local SLUGS = 100000
local HALF = SLUGS / 2

local words = {
  "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper",
  "kestrel", "lumen", "maple", "nectar", "onyx", "pebble", "quartz", "raven", "sierra", "tundra",
  "umber", "violet", "willow", "xenon", "yarrow", "zephyr", "acorn", "bramble", "cobalt", "dune",
  "echo", "fable", "garnet", "hollow", "iris", "jasper", "kelp", "lagoon", "meadow", "nimbus",
}
local W = #words

-- slug(n, sep): three words for n in [0, W^3), e.g. slug(0, "-") = "amber-amber-amber".
local function slug(n, sep)
  local a = n % W
  n = math.floor(n / W)
  local b = n % W
  n = math.floor(n / W)
  local c = n % W
  return words[a + 1] .. sep .. words[b + 1] .. sep .. words[c + 1]
end

-- One of the 100 000 slug paths.
local function slug_path(i)
  if i < HALF then
    return "/articles/" .. slug(i, "-")
  end
  return "/users/" .. slug(i - HALF, "_") .. "/repos"
end

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local small_bodies = {}
local big_bodies = {}
counts = { get = 0, canonical = 0, export = 0, post_small = 0, post_big = 0 }

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

function init(args)
  math.randomseed(7919 * (id or 1) + 17)
  if payload_list then
    for line in io.lines(payload_list) do
      local kind, path = line:match("^(%S+)%s+(.+)$")
      if kind == "small" then
        table.insert(small_bodies, read_file(path))
      elseif kind == "big" then
        table.insert(big_bodies, read_file(path))
      end
    end
  end
  if #small_bodies == 0 then
    post_share = 0
  end
end

local get_headers = {}
local canonical_headers = { ["Canonical-Resource"] = "" }
local post_headers = {
  ["Content-Type"] = "application/json",
  ["Content-Encoding"] = "gzip",
}

function request()
  local roll = math.random()
  if roll < export_share then
    counts.export = counts.export + 1
    return wrk.format("GET", "/export/" .. slug(math.random(0, HALF - 1), "-"), get_headers)
  end
  roll = roll - export_share
  if roll < post_share then
    local body
    if #big_bodies > 0 and math.random() < big_post_share then
      counts.post_big = counts.post_big + 1
      body = big_bodies[math.random(1, #big_bodies)]
    else
      counts.post_small = counts.post_small + 1
      body = small_bodies[math.random(1, #small_bodies)]
    end
    return wrk.format("POST", "/articles/" .. slug(math.random(0, HALF - 1), "-") .. "/comments",
      post_headers, body)
  end
  local path = slug_path(math.random(0, SLUGS - 1))
  if math.random() < canonical_share then
    counts.canonical = counts.canonical + 1
    canonical_headers["Canonical-Resource"] = "catalog." .. slug(math.random(0, resources - 1), "-")
    return wrk.format("GET", path, canonical_headers)
  end
  counts.get = counts.get + 1
  return wrk.format("GET", path, get_headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
  local mix = { get = 0, canonical = 0, export = 0, post_small = 0, post_big = 0 }
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k, v in pairs(c) do
      mix[k] = mix[k] + v
    end
  end
  io.write(string.format("MIX get=%d canonical=%d export=%d post_small=%d post_big=%d\n",
    mix.get, mix.canonical, mix.export, mix.post_small, mix.post_big))
end
