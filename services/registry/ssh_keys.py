"""Which host holds each SSH host key: a key another host holds is refused at registration.

A hostd registers the public line of its SSH host key (potluck.kernel.ssh_identity), and
the gateways map a link presenting that key to the first host that registered it
(potluck.sshgateway.projection). A link cannot be forged with a key's public line alone: the
SSH handshake makes hostd, the link's server, sign with the private half. But a claim can
still hurt: a member who learnt another machine's public line (a shared machine's readable
`.pub`, a state directory copied) and registered it while that machine was deregistered took
the key in the gateways' eyes, so every later link of its true holder was refused, until
the claimant deregistered. So the registry refuses a key that another host holds
(SSH_KEY_TAKEN, without saying which host: that is the operator's, in the log).

Only a new claim is refused: a host registering the key it holds already is not. A host
holds the key it last registered until it leaves or is revoked (for good; the gateways
forget its key then too). A deregistered host keeps it: it comes back with the same key. Keys
are compared by their wire blob, as the gateways compare them: the comment is no part of a key.

Proof of possession (hostd signing a challenge with the key) would refuse the claim too, but
it changes RegisterHost, so the contract: every hostd would have to be upgraded before it could
register again. Refusing a held key needs nothing from hostd; what it leaves open is a key
whose holder left, claimed before the same machine enrolls again: that machine is then
refused with what to do (make a new key, which the gateways learn at its registration), and
the claimant still cannot use the key.

The index follows the registry's view (a fold hook notes the hosts each batch touched), so a
check costs the hosts changed since the last one, not the whole pool. A registration checks
once that view has folded the whole log, one claim of a key at a time (claims.py).
"""

from collections.abc import Sequence

import structlog

from potluck.contracts.host_events import host_stream
from potluck.contracts.link import LINK_SIGNATURE_ALGS
from potluck.events import RecordedEvent
from potluck.kernel.rejections import Rejected
from potluck.kernel.ssh_identity import HOST_KEY_FILE
from potluck.kernel.ssh_wire import public_key_blob
from potluck.readmodels.hosts import HostsView

__all__ = ["SshKeyHolders"]

log = structlog.get_logger(__name__)

_HOST_STREAM = host_stream("")
#: For good: the gateways forget such a host's key, and so does this index.
_OUT_FOR_GOOD = frozenset({"left", "revoked"})


class SshKeyHolders:
    def __init__(self, view: HostsView) -> None:
        self.view = view
        self._blob_of: dict[str, bytes] = {}
        self._holders: dict[bytes, set[str]] = {}
        #: Hosts whose events were folded since the index last looked at them; None: build it whole.
        self._stale: set[str] | None = None

    def notice(self, batch: Sequence[RecordedEvent]) -> None:
        """A fold hook: the hosts this batch touched are read again at the next check."""
        if self._stale is None:
            return
        self._stale.update(r.stream[len(_HOST_STREAM) :] for r in batch if r.stream.startswith(_HOST_STREAM))

    @staticmethod
    def blob(line: str) -> bytes | None:
        """The key of `line` as the gateways compare it; BAD_SSH_HOST_KEY when `line` is no
        OpenSSH ed25519 public key line; None when it is empty (no gateways)."""
        if not line:
            return None
        try:
            blob = public_key_blob(line)
        except ValueError:
            # Not the parser's words: they quote the line's type back.
            raise Rejected(
                "BAD_SSH_HOST_KEY",
                "ssh_host_key is not an OpenSSH public key line (TYPE BASE64 [comment]); hostd "
                f"sends the one of {HOST_KEY_FILE}.pub in its state_dir",
                field="ssh_host_key",
                status=400,
            ) from None
        kind = line.split()[0]
        if kind not in LINK_SIGNATURE_ALGS:
            # The link takes ed25519 host keys only (potluck.contracts.link): a key of another type
            # registered fine and then every link of the host failed its handshake, which the
            # member saw only as sessions that never came. hostd makes ed25519 keys; another type
            # is a file replaced by hand.
            raise Rejected(
                "BAD_SSH_HOST_KEY",
                "ssh_host_key is not an ed25519 key, and the gateways link hosts by an ed25519 key only. "
                f"Remove {HOST_KEY_FILE} and {HOST_KEY_FILE}.pub from hostd's state_dir and start "
                "hostd again to make one",
                field="ssh_host_key",
                status=400,
            )
        return blob

    def refuse_taken(self, host_id: str, blob: bytes) -> None:
        """SSH_KEY_TAKEN when a host other than `host_id` holds the key `blob`, as the view has
        it (claims.py makes that view the whole log's)."""
        holders = self._current().get(blob, set())
        # Its own key again (every restart registers it) is no new claim: never refused, even
        # where a registry from before this check let another host claim the same key. A copied
        # state_dir's two machines, both registered then, go on as they did (the gateways link
        # the first).
        if holders and host_id not in holders:
            log.warning(
                "registry.ssh_key_taken",
                host_id=host_id,
                holders=sorted(holders),
                hint="two machines registered one SSH host key: a copied state_dir, or a member "
                "claiming another machine's key; the first holder keeps it",
            )
            raise Rejected(
                "SSH_KEY_TAKEN",
                "another machine in the pool registered this SSH host key: a machine's host key is "
                f"its own. If this machine's state_dir was copied from another, remove {HOST_KEY_FILE} "
                f"and {HOST_KEY_FILE}.pub there and start hostd again to make a new one",
                field="ssh_host_key",
                status=409,
            )

    def _current(self) -> dict[bytes, set[str]]:
        if self._stale is None:
            self._blob_of.clear()
            self._holders.clear()
            for host_id in self.view.hosts:
                self._refresh(host_id)
            self._stale = set()
        else:
            for host_id in self._stale:
                self._refresh(host_id)
            self._stale.clear()
        return self._holders

    def _refresh(self, host_id: str) -> None:
        old = self._blob_of.pop(host_id, None)
        if old is not None:
            holders = self._holders.get(old)
            if holders is not None:
                holders.discard(host_id)
                if not holders:
                    del self._holders[old]
        state = self.view.hosts.get(host_id)
        if state is None or state.admin in _OUT_FOR_GOOD or not state.ssh_host_key:
            return
        try:
            blob = public_key_blob(state.ssh_host_key)
        except ValueError:
            return  # logged before this check existed; the gateways ignore it too
        self._blob_of[host_id] = blob
        self._holders.setdefault(blob, set()).add(host_id)
