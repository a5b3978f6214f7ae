"""Images and audio in prompts through libmtmd: a projector (mmproj) file turns media into
embeddings the text model reads as tokens.

    from llamapy import LLM
    llm = LLM("model.gguf", mmproj="mmproj.gguf")
    llm.chat([{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "file:///path/cat.jpg"}}]}])

Lower down: :class:`MtmdContext` (the projector loaded for a model), :class:`Bitmap` (one
image or clip), :class:`InputChunks` (a tokenized prompt) and ``MtmdContext.eval`` to decode
them into a :class:`~llamapy.Context`.
"""
from .bitmap import AUDIO_FORMATS, IMAGE_FORMATS, Bitmap
from .chunks import ChunkType, InputChunk, InputChunks
from .context import MtmdContext
from .errors import MediaError, MtmdError, NoProjectorError, ProjectorError
from .estimate import ProjectorMemory, projector_memory
from .media import flatten_messages, has_media, load_media
from .multimodal import LlavaImageEmbed, Projector, load_mmproj, process_image
from .prompt import MediaPrompt

__all__ = [
    "MtmdContext", "Bitmap", "InputChunks", "InputChunk", "ChunkType",
    "MtmdError", "ProjectorError", "MediaError", "NoProjectorError",
    "load_media", "flatten_messages", "has_media", "MediaPrompt", "ProjectorMemory", "projector_memory",
    "Projector", "LlavaImageEmbed", "load_mmproj", "process_image",
    "IMAGE_FORMATS", "AUDIO_FORMATS",
]
