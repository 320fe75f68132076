"""Fine-tuning a TrainingJob: TRL's SFTTrainer or DPOTrainer with a PEFT LoRA adapter.

params (presets and hyper-parameters), request (validating and creating a job), guard (the
brain-damage guard), callback (metric points, checkpoints, heartbeat), data (rows for SFT, DPO and
judge jobs), build (the starting model and the TRL trainer) and run (run_job, top to bottom); group
and worker_main train one job in several processes (torchrun, distributed data parallel).
Claim, heartbeat, log, cancel, reap and resume are jobs.lifecycle's, as for every other job kind.
Nothing here assumes a CPU: on a CUDA host the same code trains on the GPU (or GPUs).
"""
