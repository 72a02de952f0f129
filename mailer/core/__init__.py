"""The pure core: the rules (policy), tokens, throttle arithmetic, addresses, headers, HTML mail
and rendering. Nothing here touches a database, an SMTP server, HTTP or the clock; callers pass
in what it needs (facts, keys, times), so every rule is a function tested without a server."""
