"""The jobs a user runs on one source: the frame path (preprocess → infer → track → export → render → write), the
file job (`annotate`) and the iterator job (`segment`)."""
