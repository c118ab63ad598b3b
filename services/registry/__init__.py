"""registry service (see DESIGN.md, Components): which machines are in the pool, and how they are.

- host.py        the Host aggregate: pure decisions (enroll, register, control, silence, beats)
- repository.py  a command on one host: load its stream, decide, append; one retry policy
- projection.py  the registry's view (HostsView) as a projection fed by potluck.events' Fold
- requests.py    register, control, a host's status, the list: what hosts and operators ask
- replies.py     a host's request admitted (rate, own reply inbox), answered as one Reply by stable code
- host_rate.py   how fast one host may ask: a token bucket per host, for requests and for beats
- heartbeats.py  heartbeats in, HostSuspected / HostLost / HostRecovered out
- liveness.py    the liveness policy and the last-seen clock
- service.py     the process: fold, subscriptions, follow, watch
- enrollment.py, nats_auth.py   admitting a machine: its id, its NATS key, the users file
- admitted_keys.py which keys the users file admits at a moment, and when that next changes
- users_file.py    the registry's upkeep of the users file: at start, per join, at each key's end
- connection_caps.py   pure: which host keys hold too many NATS connections, and for how long
- connection_watch.py  reads nats-server's /connz, records HostConnectionsCapped, renders the users file
- metrics.py     hosts by status, heartbeats missed
"""
