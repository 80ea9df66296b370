#!/usr/bin/env bash
# Sourced by scripts/reproduce.sh and scripts/test.sh: sets TF_CPP_MIN_LOG_LEVEL and TF_NOISE, the
# exact pattern of the fixed start-up lines their stderr filter drops.
#
# A quiet console. TensorFlow 2.21 writes start-up lines to stderr at `import tensorflow` that read
# like errors on a CPU-only machine; what removes each (checked by hand):
#   "I0000 ... cpu_feature_guard.cc] This TensorFlow binary is optimized ..."  TF_CPP_MIN_LOG_LEVEL>=1
#   "E0000 ... cuda_platform.cc] failed call to cuInit: ... CUDA error"         TF_CPP_MIN_LOG_LEVEL=3 only
#   "I0000 ... port.cc] oneDNN custom operations are on ..."                   TF_ENABLE_ONEDNN_OPTS=0 only
#   "I0000 ... cudart_stub.cc] Could not find cuda drivers ..."                no setting (logged before
#   "WARNING: All log messages before absl::InitializeLog() ..."              TF reads its log level)
#   "E0000 ... node_def_util.cc] NodeDef mentions attribute                    no setting (logged at the C++
#    use_unbounded_threadpool which is not in the op definition ..."           error level by tf.data's
#                                                                              graph rewrite in every fit and
#                                                                              predict; the line itself says
#                                                                              the attribute is ignored)
# CUDA_VISIBLE_DEVICES="" removes none of them (nor ipykernel's "[IPKernelApp] WARNING | Kernel is
# running over TCP without encryption", said for every local papermill kernel). Trade-offs:
# TF_CPP_MIN_LOG_LEVEL=3 would also hide real C++ errors that TensorFlow logs without raising, and
# TF_ENABLE_ONEDNN_OPTS=0 switches off the oneDNN kernels (slower CPU training, other rounding). So: level 2 (C++ INFO and WARNING hidden,
# C++ errors kept), oneDNN left on, and the fixed lines above dropped from stderr by an exact
# filter (TF_NOISE); every other line, and every Python warning or traceback, still gets through.
# The patterns are not anchored at the line start: papermill's progress bar (carriage returns, no
# newline) can precede a line. tests/test_eda.py checks the pattern.
export TF_CPP_MIN_LOG_LEVEL=2
TF_NOISE='WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
TF_NOISE+='|I0000 [0-9:. ]+[0-9]+ port\.cc:[0-9]+\] oneDNN custom operations are on'
TF_NOISE+='|I0000 [0-9:. ]+[0-9]+ cudart_stub\.cc:[0-9]+\] Could not find cuda drivers on your machine'
TF_NOISE+='|E0000 [0-9:. ]+[0-9]+ cuda_platform\.cc:[0-9]+\] failed call to cuInit: .*CUDA error'
TF_NOISE+='|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption'
TF_NOISE+='|E0000 [0-9:. ]+[0-9]+ node_def_util\.cc:[0-9]+\] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition'
