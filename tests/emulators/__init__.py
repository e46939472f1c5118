"""Local emulators of the remote APIs syncd talks to, served over real HTTP
on loopback ports so the real client libraries are exercised end to end.

Each module's docstring says what it emulates and which published behaviour
it follows. They are test peers, faithful to the references rather than
convenient for the code under test.
"""
