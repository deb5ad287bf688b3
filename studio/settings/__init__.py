"""The settings of this install: config.yaml as typed Settings, and who may use a shared
server (logins, throttles)."""
