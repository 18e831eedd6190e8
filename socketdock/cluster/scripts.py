"""
What the cluster keeps in Redis, and the Lua scripts that change it
atomically (each script runs alone in Redis: two instances racing for the
same lost instance cannot both win).

Keys, under ``socketdock:<db>:`` (the database number is in the name because
pub/sub channels are shared by every database of a server):

======================  ======================================================
``where``               hash: connection id -> the instance holding it live
``live:<instance>``     set: the ids live on that instance (to clean ``where``)
``owed:<instance>``     set: accepted ids whose disconnect notice is not yet
                        delivered (the journal's role, cluster-wide)
``details:<instance>``  hash: owed id -> its tags and state as JSON, for the
                        recovered notice (only ids that have any)
``alive:<instance>``    the heartbeat: that run's token (random, one per run),
                        with a time-to-live
``beats:<instance>``    the number of beats of that run, with the same
                        time-to-live: a run that finds another's token
                        in ``alive`` watches it to tell a live one from
                        a crashed one
``instances``           set: instances that may have records
``claimed:<instance>``  set: the ids a survivor claimed from that instance
                        (read, and cleared, when it rejoins after all)
``tag:<tag>``           (channel) tag requests for instances holding the tag
======================  ======================================================

An instance is named by its ``externalhostandport``: unique in a working
cluster (the backend tells instances apart by it), stable across restarts,
and the base URL at which others forward ``/socket/<id>`` requests to it.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Names:
    """Key and channel names for one cluster (one Redis database)."""

    prefix: bytes

    @classmethod
    def for_db(cls, db: int) -> Names:
        return cls(f"socketdock:{db}:".encode("ascii"))

    def tag_channel(self, tag: str) -> bytes:
        return self.prefix + b"tag:" + tag.encode("utf-8")

    def tag_of(self, channel: bytes) -> str | None:
        """The tag a channel carries, or None for another channel."""
        head = self.prefix + b"tag:"
        if not channel.startswith(head):
            return None
        return channel[len(head) :].decode("utf-8", "replace")

    def live(self, instance: str) -> bytes:
        return self.prefix + b"live:" + instance.encode("utf-8")

    def owed(self, instance: str) -> bytes:
        return self.prefix + b"owed:" + instance.encode("utf-8")

    def details(self, instance: str) -> bytes:
        return self.prefix + b"details:" + instance.encode("utf-8")

    @property
    def where(self) -> bytes:
        return self.prefix + b"where"


#: Make this instance's records match what it holds, and beat.  ARGV: prefix,
#: me, token, ttl (ms), first ("1" on a run's first link), the number of live
#: ids, the number of owed ids, the live ids, the owed ids, then (id, details)
#: pairs.  On a run's first link the owed ids of the
#: run before (a crash, a restart before anyone claimed them) are kept and
#: returned, for this run to send their notices.  Returns {fenced, leftover,
#: details}: fenced lists the ids a survivor claimed from this instance in
#: between (it was cut off for longer than the time-to-live, and declared
#: lost); details is the leftover ids' {id, details, ...}.  On a run's first
#: link, while another run's heartbeat is still alive under this name,
#: nothing is changed and {'taken', beats, pttl} is returned: that run's beat
#: count so far and the milliseconds its heartbeat has left.
REJOIN = b"""
local P, me, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local first = ARGV[5] == '1'
local nlive, nowed = tonumber(ARGV[6]), tonumber(ARGV[7])
if first then
  local other = redis.call('GET', P..'alive:'..me)
  if other and other ~= token then
    local beats = redis.call('GET', P..'beats:'..me) or ''
    return {'taken', beats, redis.call('PTTL', P..'alive:'..me)}
  end
end
local where, live, owed = P..'where', P..'live:'..me, P..'owed:'..me
local details = P..'details:'..me
local fenced = redis.call('SMEMBERS', P..'claimed:'..me)
redis.call('DEL', P..'claimed:'..me)
local leftover, leftdetails = {}, {}
if first then
  leftover = redis.call('SMEMBERS', owed)
  leftdetails = redis.call('HGETALL', details)
else
  redis.call('DEL', owed, details)
end
for _, id in ipairs(redis.call('SMEMBERS', live)) do
  if redis.call('HGET', where, id) == me then redis.call('HDEL', where, id) end
end
redis.call('DEL', live)
for i = 8, 7 + nlive do
  redis.call('SADD', live, ARGV[i])
  redis.call('HSET', where, ARGV[i], me)
end
for i = 8 + nlive, 7 + nlive + nowed do redis.call('SADD', owed, ARGV[i]) end
for i = 8 + nlive + nowed, #ARGV, 2 do redis.call('HSET', details, ARGV[i], ARGV[i + 1]) end
redis.call('SET', P..'alive:'..me, token, 'PX', ttl)
redis.call('SADD', P..'instances', me)
return {fenced, leftover, leftdetails}
"""

#: One heartbeat: renew this run's time-to-live, then claim the records of
#: every instance whose heartbeat lapsed.  ARGV: prefix, me, token, ttl (ms).
#: Returns {0} when this run's heartbeat is gone (Redis lost it, or it
#: lapsed): the caller rejoins.  Otherwise {1, {instance, id, details, ...}}:
#: the owed ids now moved to this instance (with their tags and state, or
#: ''), whose notices it sends.
BEAT = b"""
local P, me, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', P..'alive:'..me) ~= token then return {0} end
redis.call('PEXPIRE', P..'alive:'..me, ttl)
redis.call('INCR', P..'beats:'..me)
redis.call('PEXPIRE', P..'beats:'..me, ttl)
local where, mine = P..'where', P..'owed:'..me
local mydetails = P..'details:'..me
local claimed = {}
for _, other in ipairs(redis.call('SMEMBERS', P..'instances')) do
  if other ~= me and redis.call('EXISTS', P..'alive:'..other) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', P..'live:'..other)) do
      if redis.call('HGET', where, id) == other then redis.call('HDEL', where, id) end
    end
    redis.call('DEL', P..'claimed:'..other)
    for _, id in ipairs(redis.call('SMEMBERS', P..'owed:'..other)) do
      redis.call('SADD', mine, id)
      redis.call('SADD', P..'claimed:'..other, id)
      local d = redis.call('HGET', P..'details:'..other, id)
      if d then redis.call('HSET', mydetails, id, d) else d = '' end
      table.insert(claimed, other)
      table.insert(claimed, id)
      table.insert(claimed, d)
    end
    redis.call('EXPIRE', P..'claimed:'..other, 86400)
    redis.call('DEL', P..'live:'..other, P..'owed:'..other, P..'details:'..other, P..'beats:'..other)
    redis.call('SREM', P..'instances', other)
  end
end
return {1, claimed}
"""

#: A clean stop: no longer alive, nothing live; with no notice owed, no
#: record left at all.  Notices still owed (undelivered at the end of the
#: drain) are left for a survivor to claim at once.  ARGV: prefix, me, token.
LEAVE = b"""
local P, me, token = ARGV[1], ARGV[2], ARGV[3]
local where, live = P..'where', P..'live:'..me
for _, id in ipairs(redis.call('SMEMBERS', live)) do
  if redis.call('HGET', where, id) == me then redis.call('HDEL', where, id) end
end
redis.call('DEL', live)
if redis.call('GET', P..'alive:'..me) == token then
  redis.call('DEL', P..'alive:'..me, P..'beats:'..me)
end
if redis.call('SCARD', P..'owed:'..me) == 0 then redis.call('SREM', P..'instances', me) end
return 1
"""

#: A batch of this instance's changes, in the order they were made, in one
#: round trip (the roster's group commit).  ARGV: prefix, me, then triples
#: (op, id, details): ``a`` live here (``where`` and ``live``), ``g`` no
#: longer live here, ``r`` owed (with its details, if any), ``f`` no longer
#: owed, ``n`` its details changed ('' drops them).  Returns 1.
APPLY = b"""
local P, me = ARGV[1], ARGV[2]
local where, live, owed = P..'where', P..'live:'..me, P..'owed:'..me
local details = P..'details:'..me
for i = 3, #ARGV, 3 do
  local op, id, d = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'a' then
    redis.call('HSET', where, id, me)
    redis.call('SADD', live, id)
  elseif op == 'g' then
    redis.call('HDEL', where, id)
    redis.call('SREM', live, id)
  elseif op == 'r' then
    redis.call('SADD', owed, id)
    if d ~= '' then redis.call('HSET', details, id, d) end
  elseif op == 'f' then
    redis.call('SREM', owed, id)
    redis.call('HDEL', details, id)
  elseif d ~= '' then
    redis.call('HSET', details, id, d)
  else
    redis.call('HDEL', details, id)
  end
end
return 1
"""

#: The live instance holding a connection, or false.  ARGV: prefix, id.
LOCATE = b"""
local P, id = ARGV[1], ARGV[2]
local holder = redis.call('HGET', P..'where', id)
if not holder then return false end
if redis.call('EXISTS', P..'alive:'..holder) == 0 then return false end
return holder
"""

#: The instances alive now, for requests that ask each of them (SPEC §9's
#: confirmed tag send and tag listing).  ARGV: prefix.
INSTANCES = b"""
local P = ARGV[1]
local alive = {}
for _, name in ipairs(redis.call('SMEMBERS', P..'instances')) do
  if redis.call('EXISTS', P..'alive:'..name) == 1 then table.insert(alive, name) end
end
return alive
"""
