"""n choices of one prompt: the prompt is prefilled once, and the other rows copy its KV cache.

Requests that carry the same `prefix_group` (the API gives the n rows of one OpenAI call one group)
and the same prompt tokens share their prefill: the first admitted leads and prefills as usual;
each one after it takes a slot and waits ("follow") until the leader has positions 0..L-2 of the
L-token prompt in its cache, then copies them into its own row (`SlotCache.copy_prefix`) and
prefills only the prompt's last token itself. That last token is what gives every row its own
first-token logits, sampled with its own seed. If the leader leaves first, a follower waiting for
it prefills its prompt on its own (or follows the group's next leader): nothing is ever lost.
"""

from __future__ import annotations

from observability import metrics
from runners.kv import SlotCache
from runners.sequence import Seq


class Fanout:
    def __init__(self, cache: SlotCache) -> None:
        self.cache = cache
        self._leaders: dict[str, Seq] = {}
        self._waiting: list[Seq] = []

    def admit(self, seq: Seq) -> bool:
        """A request just took a slot: True to prefill it now, False when it follows a leader."""
        group = seq.req.prefix_group
        if group is None or len(seq.prompt) < 2:
            return True
        lead = self._leaders.get(group)
        if lead is None or lead.prompt != seq.prompt:
            self._leaders[group] = seq
            return True
        seq.state = "follow"
        self._waiting.append(seq)
        return False

    def ready(self) -> list[Seq]:
        """Followers whose prompt is ready to copy (copied now) or whose leader left: each has only
        what is left of its prompt to prefill."""
        out: list[Seq] = []
        for seq in list(self._waiting):
            shared = len(seq.prompt) - 1
            lead = self._leaders.get(seq.req.prefix_group or "")
            if lead is not None and lead.prompt == seq.prompt and lead.slot >= 0:
                if lead.prefilled < shared:
                    continue  # its leader is still prefilling
                self.cache.copy_prefix(lead.slot, seq.slot, shared)
                seq.prefilled = shared
                metrics.engine_shared_prefill.inc(shared)
            self._waiting.remove(seq)
            seq.state = "prefill"
            out.append(seq)
        return out

    def forget(self, seq: Seq) -> None:
        """The request left (done, failed, cancelled): it neither waits nor leads any more."""
        if seq in self._waiting:
            self._waiting.remove(seq)
        group = seq.req.prefix_group
        if group is not None and self._leaders.get(group) is seq:
            del self._leaders[group]
