"""PipeLive's benchmarks: trace replay against vLLM (`serving`), live reconfiguration against its baselines
(`reconfigure`), the switch pause as the KV in flight grows (`pause_scaling`).

`workload` (the Azure trace replay) and `vllm_runner` use the standard library only: the vLLM side runs in a
virtual environment of its own.
"""
