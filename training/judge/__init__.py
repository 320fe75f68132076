"""The pairwise judge: "given this context, is answer A or answer B better?"

prompt (how a pair is put to a judge: one prompt format for training and inference), pairs (the
training rows built from a DPO snapshot of human preferences, both orders of each pair so position
bias can be measured), judges (the verdict of a local judge, the log probability of completing "A"
vs "B" in both orders, or of an external OpenAI-compatible endpoint), report (the judge's evaluation
against held-out human pairs beside the human ceiling) and suggestions (what leads see on
comparison and labelling tasks, which also reorders the queue).
"""
