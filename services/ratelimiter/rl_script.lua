-- rl_script.lua: every ratelimiter operation, atomically, in one round trip.
--
-- The rules are those of rl_limits.h; rl_store_mem.c implements the same in
-- process, and tests/integration/ratelimiter_store_test.c requires the two
-- to answer alike on one clock.  Change the three together.
--
-- Loaded once (SCRIPT LOAD) and run with EVALSHA by rl_store_redis.c, which
-- also builds the keys (see there).  ARGV[1] names the operation, ARGV[2]
-- is the time in microseconds, "0" meaning Redis's own clock (TIME): only
-- tests pass another.  Numbers are written with string.format('%d') since
-- Lua's default conversion keeps 14 digits and times have 16.

local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == 0 then
	local t = redis.call('TIME')
	now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local US = 1000000
local MINUTE = 60 * US
local HOUR = 3600 * US
local DAY = 86400 * US
local HALF_LIFE = 600 * US -- RL_THREAT_HALF_LIFE_S
local STEP1, STEP1_PCT = 25000, 50 -- RL_THREAT_STEP1 (milli-points)
local STEP2, STEP2_PCT = 50000, 25 -- RL_THREAT_STEP2
local BLOCK = 100000 -- RL_THREAT_BLOCK
local CHURN_FREE, CHURN_POINTS = 20, 2
local CHURN_WINDOW = 600 * US
local CHURN_MAX = 1000 -- RL_CHURN_TRACK_MAX
local COST_RETRY = 5 * US -- RL_COST_RETRY_S
local DEDUP = 3600 * US -- RL_SETTLE_DEDUP_S
local STATE_TTL_MS = 7200 * 1000 -- RL_STATE_TTL_S
local COST_TTL_MS = 2 * 86400 * 1000
local SECONDS_MAX = 604800 -- PROTO_SECONDS_MAX

local function int(n)
	return string.format('%d', n)
end

local function num(v, d)
	return tonumber(v) or d
end

local function ceil_s(us)
	if us <= 0 then
		return 0
	end
	local s = math.floor((us + US - 1) / US)
	if s > SECONDS_MAX then
		s = SECONDS_MAX
	end
	return s
end

-- rl_threat_decay()
local function decay(ts, tt)
	if ts <= 0 then
		return 0
	end
	if now <= tt then
		return ts
	end
	return math.floor(ts * 2 ^ (-(now - tt) / HALF_LIFE))
end

-- rl_threat_pct()
local function pct(ts)
	if ts >= STEP2 then
		return STEP2_PCT
	end
	if ts >= STEP1 then
		return STEP1_PCT
	end
	return 100
end

-- rl_scaled()
local function scaled(limit, p)
	local v = math.floor(limit * p / 100)
	if v < 1 then
		v = 1
	end
	return v
end

-- rl_gcra_step()
local function gcra(tat, limit, period, code)
	local t = math.floor(period / limit)
	local eff = tat
	if eff < now then
		eff = now
	end
	local diff = eff + t - now
	if diff > period then
		return {allow = false, tat = tat, limit = limit, remaining = 0,
			reset = eff - now, retry = diff - period, code = code}
	end
	return {allow = true, tat = eff + t, limit = limit,
		remaining = math.floor((period - diff) / t), reset = diff,
		retry = 0, code = code}
end

-- rl_gcra_remaining()
local function remaining(tat, limit, period)
	local t = math.floor(period / limit)
	if tat < now then
		tat = now
	end
	local left = period - (tat - now)
	if left <= 0 then
		return 0
	end
	left = math.floor(left / t)
	if left > limit then
		left = limit
	end
	return left
end

-- A subject's or an IP's state hash.
local function load(key)
	local v = redis.call('HMGET', key, 'tm', 'th', 'ts', 'tt', 'bu', 'br',
		'cw')
	return {key = key, tm = num(v[1], 0), th = num(v[2], 0),
		ts = num(v[3], 0), tt = num(v[4], now), bu = num(v[5], 0),
		br = v[6] or '', cw = num(v[7], 0)}
end

local function save(st)
	redis.call('HSET', st.key, 'tm', int(st.tm), 'th', int(st.th),
		'ts', int(st.ts), 'tt', int(st.tt), 'bu', int(st.bu),
		'br', st.br, 'cw', int(st.cw))
	local ttl = STATE_TTL_MS
	local b = math.floor((st.bu - now) / 1000) + 1000
	if b > ttl then
		ttl = b
	end
	redis.call('PEXPIRE', st.key, int(ttl))
end

-- Decays the score, adds points, blocks past the threshold (and lists the
-- block in the blocked set, with its reason).
local function threat_add(st, points, reason, member, block_us, zkey, ikey)
	st.ts = decay(st.ts, st.tt) + points * 1000
	st.tt = now
	if points > 0 and st.bu <= now and st.ts >= BLOCK then
		st.bu = now + block_us
		st.br = reason
		redis.call('ZADD', zkey, int(st.bu), member)
		redis.call('HSET', ikey, member, reason)
	end
end

-- rl_mem_churn(): the points a session id seen from this IP adds.
local function churn(ip, setkey, sid)
	if ip.cw <= now then
		redis.call('DEL', setkey)
		ip.cw = now + CHURN_WINDOW
	end
	if redis.call('SISMEMBER', setkey, sid) == 1 then
		return 0
	end
	local n = redis.call('SCARD', setkey)
	if n < CHURN_MAX then
		redis.call('SADD', setkey, sid)
		redis.call('PEXPIRE', setkey, int(CHURN_WINDOW / 1000 + 60000))
	end
	if n + 1 > CHURN_FREE then
		return CHURN_POINTS
	end
	return 0
end

-- rl_mem_cost_refresh(): today's money, expired reservations released.
local function cost_load(ckey, zkey)
	local v = redis.call('HMGET', ckey, 'day', 'spent', 'reserved')
	local c = {key = ckey, zkey = zkey, day = num(v[1], -1),
		spent = num(v[2], 0), reserved = num(v[3], 0), changed = false}
	local day = math.floor(now / DAY)
	if c.day ~= day then
		c.changed = c.day ~= -1
		c.day = day
		c.spent = 0
	end
	local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', int(now))
	for _, tok in ipairs(gone) do
		c.reserved = c.reserved -
			num(redis.call('HGET', ckey, 'r:' .. tok), 0)
		redis.call('HDEL', ckey, 'r:' .. tok)
	end
	if #gone > 0 then
		redis.call('ZREMRANGEBYSCORE', zkey, '-inf', int(now))
		c.changed = true
	end
	if c.reserved < 0 then
		c.reserved = 0
	end
	return c
end

local function cost_save(c)
	redis.call('HSET', c.key, 'day', int(c.day), 'spent', int(c.spent),
		'reserved', int(c.reserved))
	redis.call('PEXPIRE', c.key, int(COST_TTL_MS))
	redis.call('PEXPIRE', c.zkey, int(COST_TTL_MS))
end

if op == 'check' then
	-- KEYS: subject state, IP state, IP sessions, subject cost, subject
	-- reservations, blocked set, block reasons.
	-- ARGV: op now per_minute per_hour per_ip cost_limit block_s
	--       reserve_ttl_s reserve threat is_session token subject_member
	--       ip_member session_id
	-- Reply: code limit remaining reset_s retry_after_s reserved
	local per_min, per_hour = tonumber(ARGV[3]), tonumber(ARGV[4])
	local per_ip, cost_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
	local block_us, ttl_us = tonumber(ARGV[7]) * US, tonumber(ARGV[8]) * US
	local reserve, points = tonumber(ARGV[9]), tonumber(ARGV[10])
	local token = ARGV[12]
	local S, I = load(KEYS[1]), load(KEYS[2])
	local ip_points, ip_reason = points, 'request'
	if ARGV[11] == '1' then
		local c = churn(I, KEYS[3], ARGV[15])
		if c > 0 then
			ip_points = ip_points + c
			ip_reason = 'session_churn'
		end
	end
	threat_add(S, points, 'request', ARGV[13], block_us, KEYS[6], KEYS[7])
	threat_add(I, ip_points, ip_reason, ARGV[14], block_us, KEYS[6],
		KEYS[7])
	if S.bu > now or I.bu > now then
		save(S)
		save(I)
		local r = ceil_s(math.max(S.bu, I.bu) - now)
		return {'blocked', 0, 0, r, r, 0}
	end

	local ps, pi = pct(S.ts), pct(I.ts)
	local c = {}
	c[1] = gcra(S.tm, scaled(per_min, ps), MINUTE, 'rate_limit_minute')
	c[2] = gcra(S.th, scaled(per_hour, ps), HOUR, 'rate_limit_hour')
	c[3] = gcra(I.tm, scaled(per_ip, pi), MINUTE, 'ip_rate_limit')
	local cost = cost_load(KEYS[4], KEYS[5])
	local room = cost.spent + cost.reserved + reserve <= cost_limit
	local left = cost_limit - cost.spent - cost.reserved
	if left < 0 then
		left = 0
	end
	local mid = (math.floor(now / DAY) + 1) * DAY - now
	local retry = 0
	if not room then
		if cost.spent + reserve > cost_limit then
			retry = mid
		elseif COST_RETRY < mid then
			retry = COST_RETRY
		else
			retry = mid
		end
	end
	c[4] = {allow = room, limit = cost_limit, remaining = left,
		reset = mid, retry = retry, code = 'daily_cost_limit'}

	-- The refusal to report: the one that lasts longest.
	local deny = nil
	for i = 1, 4 do
		if not c[i].allow and (deny == nil or c[i].retry > deny.retry) then
			deny = c[i]
		end
	end
	if deny ~= nil then
		save(S)
		save(I)
		if cost.changed then
			cost_save(cost)
		end
		local r = ceil_s(deny.retry)
		if r < 1 then
			r = 1
		end
		return {deny.code, deny.limit, deny.remaining, ceil_s(deny.reset),
			r, 0}
	end

	-- Admitted: apply everything.
	S.tm, S.th, I.tm = c[1].tat, c[2].tat, c[3].tat
	local reserved = 0
	if reserve > 0 then
		cost.reserved = cost.reserved + reserve
		redis.call('HSET', KEYS[4], 'r:' .. token, int(reserve))
		redis.call('ZADD', KEYS[5], int(now + ttl_us), token)
		reserved = 1
		cost.changed = true
	end
	save(S)
	save(I)
	if cost.changed then
		cost_save(cost)
	end
	local tight = c[1]
	for i = 2, 3 do
		if c[i].remaining < tight.remaining then
			tight = c[i]
		end
	end
	return {'ok', tight.limit, tight.remaining, ceil_s(tight.reset), 0,
		reserved}
elseif op == 'settle' then
	-- KEYS: subject cost, subject reservations, settled marker.
	-- ARGV: op now token actual.  Reply: settled | unknown | duplicate
	local d = tonumber(redis.call('GET', KEYS[3]))
	if d ~= nil and d > now then
		return 'duplicate'
	end
	redis.call('SET', KEYS[3], int(now + DEDUP), 'PX', int(DEDUP / 1000))
	local cost = cost_load(KEYS[1], KEYS[2])
	local tok = ARGV[3]
	local a = redis.call('HGET', KEYS[1], 'r:' .. tok)
	local state = 'unknown'
	if a then
		cost.reserved = cost.reserved - tonumber(a)
		if cost.reserved < 0 then
			cost.reserved = 0
		end
		redis.call('HDEL', KEYS[1], 'r:' .. tok)
		redis.call('ZREM', KEYS[2], tok)
		state = 'settled'
	end
	cost.spent = cost.spent + tonumber(ARGV[4])
	cost_save(cost)
	return state
elseif op == 'quota' then
	-- KEYS: subject state, subject cost, subject reservations.
	-- ARGV: op now per_minute per_hour cost_limit
	-- Reply: minute_limit minute_used hour_limit hour_used cost_limit
	--        spent reserved blocked_s
	local S = load(KEYS[1])
	local p = pct(decay(S.ts, S.tt))
	local lm = scaled(tonumber(ARGV[3]), p)
	local lh = scaled(tonumber(ARGV[4]), p)
	local cost = cost_load(KEYS[2], KEYS[3])
	if cost.changed then
		cost_save(cost)
	end
	local blocked = 0
	if S.bu > now then
		blocked = ceil_s(S.bu - now)
	end
	return {lm, lm - remaining(S.tm, lm, MINUTE), lh,
		lh - remaining(S.th, lh, HOUR), tonumber(ARGV[5]), cost.spent,
		cost.reserved, blocked}
elseif op == 'threat' then
	-- KEYS: subject state (unused without a subject), IP state, blocked
	-- set, block reasons.
	-- ARGV: op now block_s points reason has_subject subject_member
	--       ip_member.  Reply: 1 when the subject or the IP is blocked.
	local block_us, points = tonumber(ARGV[3]) * US, tonumber(ARGV[4])
	local blocked = false
	if ARGV[6] == '1' then
		local S = load(KEYS[1])
		threat_add(S, points, ARGV[5], ARGV[7], block_us, KEYS[3],
			KEYS[4])
		save(S)
		blocked = S.bu > now
	end
	local I = load(KEYS[2])
	threat_add(I, points, ARGV[5], ARGV[8], block_us, KEYS[3], KEYS[4])
	save(I)
	if blocked or I.bu > now then
		return 1
	end
	return 0
elseif op == 'blocks' then
	-- KEYS: blocked set, block reasons.  ARGV: op now max.
	-- Reply: total, then member until_us retry_after_s reason per block.
	local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now))
	for _, m in ipairs(gone) do
		redis.call('HDEL', KEYS[2], m)
	end
	if #gone > 0 then
		redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
	end
	local out = {redis.call('ZCARD', KEYS[1])}
	local r = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now), '+inf',
		'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
	for i = 1, #r, 2 do
		local u = tonumber(r[i + 1])
		out[#out + 1] = r[i]
		out[#out + 1] = u
		out[#out + 1] = ceil_s(u - now)
		out[#out + 1] = redis.call('HGET', KEYS[2], r[i]) or ''
	end
	return out
elseif op == 'unblock' then
	-- KEYS: state, blocked set, block reasons.  ARGV: op now member.
	-- Reply: 1 when it was blocked.
	local bu = num(redis.call('HGET', KEYS[1], 'bu'), 0)
	if redis.call('EXISTS', KEYS[1]) == 1 then
		redis.call('HSET', KEYS[1], 'bu', '0', 'ts', '0', 'br', '')
	end
	redis.call('ZREM', KEYS[2], ARGV[3])
	redis.call('HDEL', KEYS[3], ARGV[3])
	if bu > now then
		return 1
	end
	return 0
end
return redis.error_reply('unknown operation')
