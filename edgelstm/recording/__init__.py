"""Recording readings for training: `edgelstm record` writes them (recorder.py, writer.py) and
read() gives them back as arrays per stream (reader.py). The file layout: files.py.

    import edgelstm.recording
    recordings = edgelstm.recording.read("recordings/")        # {stream id: StreamRecording}
"""

from .files import Row
from .reader import NO_BOOT, StreamRecording, read, recording_files
from .writer import RecordingWriter

__all__ = ["NO_BOOT", "RecordingWriter", "Row", "StreamRecording", "read", "recording_files"]
