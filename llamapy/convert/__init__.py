"""Converters from other model formats to the ones llama.cpp and whisper.cpp load, with numpy alone."""
from .bert import ConvertError, convert_bert  # noqa: F401
from .whisper_ct2 import convert_whisper_ct2  # noqa: F401
