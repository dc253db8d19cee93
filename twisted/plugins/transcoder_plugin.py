"""twistd plugin: ``twistd -n transcoder --data DIR``.  A ServiceMaker and nothing else."""

from twisted.application.service import ServiceMaker

transcoder = ServiceMaker(
    "imap-transcoder",
    "transcoder.service",
    "IMAP4 server that serves each user their mail encrypted to their own key",
    "transcoder",
)
