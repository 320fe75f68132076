"""The pairwise judge: "given this context, is answer A or answer B better?"

prompt (how a pair is put to a judge: one prompt format for training and inference), pairs (the
training rows built from a DPO snapshot of human preferences, both orders of each pair, and the
held-out and calibration slices), judges (a local judge's log probability of completing "A" vs "B",
or an external OpenAI-compatible endpoint's letter; judge_pairs asks both orders, and decide() is the
one rule that turns them into a verdict: x, y, or unsure unless both orders agree beyond a margin),
calibration (the temperature of a local judge), report (the evaluation against held-out human pairs
beside the human ceiling) and suggestions (what leads see on comparison and labelling tasks, which
also reorders the queue).
"""
