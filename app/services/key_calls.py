"""Each key's call count (usage_count, last_used_at), written in batches.

Counting a call used to be an UPDATE of the key's row on every request: a write, a WAL
flush the request waited for, and a row lock that made concurrent calls with one key queue
behind each other. The calls are now counted in memory and written in one statement per
`INTERVAL` at most. Readers of the counters in this process (GET /v1/keys/me, the key
lists, the consumption view) flush first, so a caller always sees its own calls; another
process's calls reach PostgreSQL within `INTERVAL`, and when it stops.

Authentication still reads the key fresh on every call (app/auth/authenticate.py), so a
revoked key is refused from the very next call: only the counting is deferred.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.services.batching import Batcher

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

# a key deleted meanwhile matches no row: the rest of the batch is written
_ADD_CALLS = """
UPDATE api_keys k SET usage_count = k.usage_count + c.calls,
                      last_used_at = greatest(k.last_used_at, c.at)
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS c(id, calls, at)
WHERE k.id = c.id
"""


class KeyCalls(Batcher):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool
        self.pending: dict[int, tuple[int, datetime]] = {}  # key id -> (calls, last call)

    def record(self, key_id: int) -> None:
        calls, _ = self.pending.get(key_id, (0, None))
        self.pending[key_id] = (calls + 1, datetime.now(UTC))
        self._recorded()

    async def _write(self) -> None:
        """Write every count recorded so far; a failure is logged and the counts are kept
        for the next flush, never failing a request."""
        batch, self.pending = self.pending, {}
        if not batch:
            return
        ids = list(batch)
        try:
            await self.pool.execute(_ADD_CALLS, ids, [batch[i][0] for i in ids], [batch[i][1] for i in ids])
        except Exception:
            log.exception("could not write the call counts of %d keys; kept for the next try", len(ids))
            for key_id, (calls, at) in batch.items():
                more, last = self.pending.get(key_id, (0, at))
                self.pending[key_id] = (calls + more, max(at, last))
