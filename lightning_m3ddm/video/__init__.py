"""Video files for training, prediction and evaluation alike (PyAV).

* :mod:`.decode` -- probing and indexing a file, frame-exact decoding by index (seek or
  sequential), resize/crop plans, streaming iteration, lossless-enough test encodes;
* :mod:`.stream` -- a prediction source (:class:`~.stream.SourceInfo`: a probed file, or
  frames held in memory), decoding it front to back with bounded memory, and H.264 mp4
  writing with the source's audio carried over, atomically;
* :mod:`.inputs` -- a run's input entries (paths, globs, folders, list files; frame
  folders for evaluate) expanded to the videos they name, for predict and evaluate alike;
  :mod:`.names` gives each a name unique within the run;
* :mod:`.errors` -- :class:`~.errors.VideoDecodeError` and :class:`~.errors.VideoInputError`,
  one line each naming the file;
* :mod:`.samples` -- small generated videos, optionally with a sound track, for tests and
  benchmarks.

Nothing else in the package opens a video file itself.
"""
