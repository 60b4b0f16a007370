"""The notifiers (`token-refresh notify`): email, Slack and signed webhooks, subscribed to the
service's public outcome topics.

A notifier is what a team outside this repository would write against the published contract,
so this package imports only the standard library, third-party libraries, the wire format
(`schemas`) and itself: nothing of the refresh engine (tests/unit/test_notify_boundary.py holds
it to that). It runs as its own process and consumer group, so it scales and fails apart from
the refreshes.
"""
