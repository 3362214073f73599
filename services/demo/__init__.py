"""The demo application and what it is judged on: its description, the scenarios, the scores.

`app` (the application description: services, costs, request types; `socialnetwork.toml`), `scenario` (a
workload, a cluster and timed events; `scenarios/*.toml`), `serving` (the `[pipeline]` table of
serving-pipeline scenarios) and `results` (per-second recording and the score every run gets). The
simulator (`services.sim`) and the live processes (`services.live`) both play these.
"""
