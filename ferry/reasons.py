"""Why ferry dropped, refused or lost something: one enumeration of reason codes.

Every audit record whose verdict is "refused" or "lost" carries one of these as its ``code``
(the ``reason`` beside it is the sentence for a person); the link receiver's drop counters and
events use the same codes. The tables in proto/WIRE.md (the link's codes) and in the README's
audit section (all of them) list exactly these; a test keeps them in step.
"""
from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # --- link: datagrams dropped before they earn any state (datagrams_dropped) ------------------
    BAD_MAGIC = "bad_magic"
    BAD_TYPE = "bad_type"
    BAD_LENGTH = "bad_length"
    BAD_HEADER = "bad_header"
    BAD_SEGMENT_SIZE = "bad_segment_size"
    INCONSISTENT_HEADER = "inconsistent_header"
    BAD_SYMBOL_AUTH = "bad_symbol_auth"
    CONFLICTING_SYMBOL = "conflicting_symbol"
    DUPLICATE_SYMBOL = "duplicate_symbol"
    PENDING_FULL = "pending_full"
    AFTER_FAILURE = "after_failure"
    UNKNOWN_EPOCH = "unknown_epoch"
    BEFORE_FIRST_BLOCK = "before_first_block"
    TOO_FAR_AHEAD = "too_far_ahead"
    REPLAY = "replay"
    KEY_NEVER_CAME = "key_never_came"
    FEC_FAILED = "fec_failed"
    STALE_FRAGMENT = "stale_fragment"
    BAD_ANNOUNCEMENT = "bad_announcement"
    ANNOUNCEMENT_RATE_LIMITED = "announcement_rate_limited"
    BAD_HEARTBEAT = "bad_heartbeat"
    HEARTBEAT_UNKNOWN_EPOCH = "heartbeat_unknown_epoch"
    HEARTBEAT_REPLAY = "heartbeat_replay"
    HEARTBEAT_AUTH = "heartbeat_auth"
    HEARTBEAT_BODY = "heartbeat_body"
    REFUSAL_SUPPRESSED = "refusal_suppressed"
    INTERNAL_ERROR = "internal_error"
    # --- link: blocks and key announcements refused (block_refused, announcement_refused) -------
    AUTH = "auth"
    WRONG_OUTER_KEY = "wrong_outer_key"
    WRONG_INNER_KEY = "wrong_inner_key"
    OLD_EPOCH = "old_epoch"
    BAD_SIGNATURE = "bad_signature"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ENVELOPE = "envelope"
    EPOCH_CHANGED = "epoch_changed"
    # --- link: blocks and objects lost (block_lost, object_lost) ----------------------------------
    TIMEOUT = "timeout"
    MISSING = "missing"
    FEC = "fec"
    BAD_PLAINTEXT = "bad_plaintext"
    TOO_MANY_PENDING = "too_many_pending"
    INCONSISTENT_TOTAL = "inconsistent_total"
    OVERLAP = "overlap"
    BLOCK_LOST = "block_lost"
    START_MISSING = "start_missing"
    # --- objects and streams refused by the lanes (object_refused, stream_refused) --------------
    NOT_REGULAR_FILE = "not_regular_file"
    BAD_FILE_NAME = "bad_file_name"
    UNREADABLE = "unreadable"
    FILE_TOO_LARGE = "file_too_large"
    EXTENSION_MISMATCH = "extension_mismatch"
    TRAILING_DATA = "trailing_data"
    MALFORMED_CONTENT = "malformed_content"
    INCONSISTENT_FILE = "inconsistent_file"
    MALFORMED_OBJECT = "malformed_object"
    OBJECT_ID_MISMATCH = "object_id_mismatch"
    CLOCK_SKEW = "clock_skew"
    REPLAYED_OBJECT = "replayed_object"
    DUPLICATE_OBJECT = "duplicate_object"
    POLICY_MISMATCH = "policy_mismatch"
    NO_OUTPUT = "no_output"
    SOURCE_ADDRESS = "source_address"
    TOO_MANY_STREAMS = "too_many_streams"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NO_RTP = "no_rtp"
    NO_PICTURE = "no_picture"
    SKIPPED_BYTES = "skipped_bytes"
    FOREIGN_SSRC = "foreign_ssrc"
    FOREIGN_SOURCE = "foreign_source"
    STREAM_CHECK = "stream_check"
    TRANSCODE_FAILED = "transcode_failed"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_NOT_REENCODED = "image_not_reencoded"
    # --- spool entries left waiting, neither taken nor refused (spool_waiting, verdict info) ------
    PARTIAL_NAME = "partial_name"
    STILL_WRITING = "still_writing"
    # --- the policy's decisions (object_refused, stream_refused) ---------------------------------
    DEFAULT_DENY = "default_deny"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    CONTENT_LIMIT = "content_limit"
    EMPTY_FILE = "empty_file"
    RATE_LIMITED = "rate_limited"
    # --- outputs and the agents (object_lost, stream_loss, objects_dropped, policy_refused) ------
    OUTPUT_FAILED = "output_failed"
    RTP_LOSS = "rtp_loss"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    DELIVERY_INTERRUPTED = "delivery_interrupted"
    BUNDLE_REFUSED = "bundle_refused"
    INVALID_POLICY = "invalid_policy"
    KERNEL_RULES = "kernel_rules"
    OLDER_BUNDLE = "older_bundle"
    POLICY_NOT_STORED = "policy_not_stored"
    RESEND_CHANGED = "resend_changed"
    RESEND_TOO_LATE = "resend_too_late"
    # --- signaling, inner side (sig-inner) -------------------------------------------------------
    SIGNALING_MALFORMED = "signaling_malformed"
    SIGNALING_UNMAPPED = "signaling_unmapped"
    PLATFORM_UNAVAILABLE = "platform_unavailable"
    PLATFORM_REFUSED = "platform_refused"
    PLATFORM_REQUEST_REFUSED = "platform_request_refused"
    # --- SIP signaling (issue 13, part "sip": ferry.codecs.sip, sip_digest, sdp) ---------------
    MALFORMED_SIP = "malformed_sip"
    SIP_AUTH_FAILED = "sip_auth_failed"
    # --- the outer SIP side (ferry.lanes.signaling.outer; issue 13 "sig-outer") --------------------
    SIP_UNKNOWN_DEVICE = "sip_unknown_device"
    WRONG_PASSWORD = "wrong_password"
    NONCE_REPLAY = "nonce_replay"
    STALE_NONCE = "stale_nonce"
    NOT_REGISTERED = "not_registered"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_MANSCDP = "bad_manscdp"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_METHOD = "unsupported_method"
    # --- the reverse lane (ferry.lanes.reverse; issue 13 "reverse") -------------------------------
    BAD_REQUEST = "bad_request"
    UNKNOWN_DEVICE = "unknown_device"
    UNSERVED = "unserved"
    HANDLER_FAILED = "handler_failed"
    # --- video of outer cameras over SIP (issue 13, part "media-outer": lanes/signaling/outer_media) --
    NO_CONTACT = "no_contact"
    NO_MEDIA_PORT = "no_media_port"
    INVITE_REFUSED = "invite_refused"
    INVITE_TIMEOUT = "invite_timeout"
    BAD_ANSWER = "bad_answer"
    NO_MEDIA = "no_media"
    MEDIA_LOST = "media_lost"
    CAMERA_BYE = "camera_bye"

    # --- media-inner: the inner platform's INVITEs (ferry.lanes.signaling.inner_media; issue 13) ---
    UNKNOWN_CAMERA = "unknown_camera"
    BAD_OFFER = "bad_offer"
    VIEWERS_BUSY = "viewers_busy"
    NO_STREAM = "no_stream"
    NOT_SUPPORTED = "not_supported"
    VIEWER_LOST = "viewer_lost"

_ALL = list(Reason)
# The link's own codes (the receiver's drops, refusals and losses): those declared before the lanes'.
LINK: frozenset[Reason] = frozenset(_ALL[:_ALL.index(Reason.NOT_REGULAR_FILE)])

# What each code means, for the documentation (and the test that keeps it in step).
MEANING: dict[Reason, str] = {
    Reason.BAD_MAGIC: "not a ferry datagram: wrong magic or version",
    Reason.BAD_TYPE: "unknown datagram type",
    Reason.BAD_LENGTH: "datagram length does not match its header",
    Reason.BAD_HEADER: "symbol header out of range (k, m, flags, sealed length, block number, index)",
    Reason.BAD_SEGMENT_SIZE: "a receive batch with no segment size",
    Reason.INCONSISTENT_HEADER: "symbol disagrees with the earlier symbols of its block",
    Reason.BAD_SYMBOL_AUTH: "symbol whose authenticator does not verify under its epoch's key",
    Reason.CONFLICTING_SYMBOL: "two different symbols with the same valid authenticator: neither is kept",
    Reason.DUPLICATE_SYMBOL: "symbol already held",
    Reason.PENDING_FULL: "the partial-block table or its byte budget is full",
    Reason.AFTER_FAILURE: "symbol of a block that already failed authentication",
    Reason.UNKNOWN_EPOCH: "no key for the symbol's epoch and no room to hold it",
    Reason.BEFORE_FIRST_BLOCK: "block number below its epoch's first block",
    Reason.TOO_FAR_AHEAD: "block number beyond the replay window ahead of the highest opened block",
    Reason.REPLAY: "block already opened (replay window)",
    Reason.KEY_NEVER_CAME: "symbols held for an unannounced epoch expired before its key came",
    Reason.FEC_FAILED: "the erasure code could not rebuild the block (datagram count)",
    Reason.STALE_FRAGMENT: "fragment of an object already complete or given up",
    Reason.BAD_ANNOUNCEMENT: "key announcement that does not parse",
    Reason.ANNOUNCEMENT_RATE_LIMITED: "over the SM2 verification budget for new announcements",
    Reason.BAD_HEARTBEAT: "heartbeat that does not parse",
    Reason.HEARTBEAT_UNKNOWN_EPOCH: "heartbeat of an epoch without a key",
    Reason.HEARTBEAT_REPLAY: "heartbeat sequence number already seen",
    Reason.HEARTBEAT_AUTH: "heartbeat that fails authentication",
    Reason.HEARTBEAT_BODY: "authenticated heartbeat with a malformed body",
    Reason.REFUSAL_SUPPRESSED: "refusal beyond the refusal-event rate: counted, not recorded one by one",
    Reason.INTERNAL_ERROR: "a bug in the receiver (logged with its traceback, alarmed once)",
    Reason.AUTH: "block that fails SM4-GCM authentication",
    Reason.WRONG_OUTER_KEY: "announcement signed by a key other than the outer agent's",
    Reason.WRONG_INNER_KEY: "announcement for another inner agent's key",
    Reason.OLD_EPOCH: "announcement of an epoch older than the newest accepted",
    Reason.BAD_SIGNATURE: "announcement (or policy bundle) whose SM2 signature does not verify",
    Reason.NOT_YET_VALID: "announcement whose validity starts after the inner clock",
    Reason.EXPIRED: "announcement whose validity ended before the inner clock",
    Reason.ENVELOPE: "SM2 key envelope that does not open",
    Reason.EPOCH_CHANGED: "announcement of a known epoch with a different key or start",
    Reason.TIMEOUT: "not complete within its time limit",
    Reason.MISSING: "block never arrived, proven sent by later authenticated data",
    Reason.FEC: "block lost: too few symbols, or they did not rebuild it",
    Reason.BAD_PLAINTEXT: "authenticated block whose fragments do not parse",
    Reason.TOO_MANY_PENDING: "too many objects in reassembly at once",
    Reason.INCONSISTENT_TOTAL: "fragments of one object disagree on its size",
    Reason.OVERLAP: "fragments of one object overlap",
    Reason.BLOCK_LOST: "object lost with a block it needed",
    Reason.START_MISSING: "object whose first fragment was lost",
    Reason.NOT_REGULAR_FILE: "spool entry that is not a regular file (link, fifo, device, folder)",
    Reason.BAD_FILE_NAME: "file name refused (characters, length, reserved forms)",
    Reason.UNREADABLE: "file that could not be read",
    Reason.FILE_TOO_LARGE: "file over the appliance's size limit",
    Reason.EXTENSION_MISMATCH: "file whose name extension claims another type than its content's (.pdf holding HTML)",
    Reason.TRAILING_DATA: "bytes after the end of a PNG, JPEG, GIF, ZIP or PDF (an archive appended to a picture)",
    Reason.MALFORMED_CONTENT: "PNG, JPEG, GIF, ZIP or PDF whose structure does not reach its end (truncated)",
    Reason.INCONSISTENT_FILE: "file object whose size, digest or media type do not match its content",
    Reason.MALFORMED_OBJECT: "canonical object that does not parse",
    Reason.OBJECT_ID_MISMATCH: "object whose id differs from its link id",
    Reason.CLOCK_SKEW: "object whose created time is further than the allowed skew from the inner clock",
    Reason.REPLAYED_OBJECT: "object already delivered (its ID is in the replay window), or too old to tell",
    Reason.DUPLICATE_OBJECT: "object re-sent after an outer restart, already delivered: dropped (object_duplicate)",
    Reason.POLICY_MISMATCH: "outer and inner agents run different policies",
    Reason.NO_OUTPUT: "no output configured for the object's lane or destination",
    Reason.SOURCE_ADDRESS: "video from an address other than the configured source",
    Reason.TOO_MANY_STREAMS: "more video streams than the appliance takes at once",
    Reason.TOO_MANY_CONNECTIONS: "TCP video connection over the pending limit of its entry or source address",
    Reason.NO_RTP: "TCP video connection closed without a valid RTP packet (silent, garbage, or closed early)",
    Reason.NO_PICTURE: "video stream that ended without a picture to send (the reason names the parser's)",
    Reason.SKIPPED_BYTES: "video bytes skipped, stripped or dropped in bulk (stream_anomaly, aggregated)",
    Reason.FOREIGN_SSRC: "RTP packets of another SSRC on a stream's port (stream_anomaly, aggregated)",
    Reason.FOREIGN_SOURCE: "RTP packets from another address on a stream's UDP port (stream_anomaly, aggregated)",
    Reason.STREAM_CHECK: "video the lane cannot take or the output cannot carry (codec, parameters)",
    Reason.TRANSCODE_FAILED: "the transcoder failed on the stream",
    Reason.IMAGE_TOO_LARGE: "picture to re-encode whose header declares more pixels than the appliance decodes",
    Reason.IMAGE_UNDECODABLE: "picture to re-encode that does not decode (malformed, truncated, unsupported)",
    Reason.IMAGE_NOT_REENCODED: ("picture under a re-encoding rule that still holds what the encoder never "
                                 "writes (metadata, extra frames, trailing bytes): inner check"),
    Reason.PARTIAL_NAME: "spool entry under a dot-name or a partial suffix (.part, .tmp...): never taken; "
                         "taken once renamed (recorded once per name)",
    Reason.STILL_WRITING: "spool file open for writing, or changed since it settled: not sent, taken once it "
                          "settles again (recorded once per name)",
    Reason.DEFAULT_DENY: "no policy rule for the object's source, lane and destination",
    Reason.OUTSIDE_TIME_WINDOW: "a rule matched, outside its time window",
    Reason.CONTENT_LIMIT: "a rule matched, the content is outside its limits (type, size, codec, caps)",
    Reason.EMPTY_FILE: "empty file, and the rule that matched does not set allow_empty",
    Reason.RATE_LIMITED: "over the rule's rate limit for the source",
    Reason.OUTPUT_FAILED: "the output could not be written",
    Reason.RTP_LOSS: "RTP packets lost on ingest",
    Reason.AUDIT_UNAVAILABLE: "the audit trail could not be written and the hold queue was full",
    Reason.DELIVERY_INTERRUPTED: ("the inner agent stopped between writing a file to its temporary name and putting it "
                                  "in place: removed (object_lost) or put in place (delivery_recovered) at restart"),
    Reason.BUNDLE_REFUSED: "policy bundle refused: unsigned, unknown signer, malformed, too large, edited",
    Reason.INVALID_POLICY: "policy bundle whose policy does not validate",
    Reason.KERNEL_RULES: "the kernel refused the policy's nftables rules",
    Reason.OLDER_BUNDLE: "policy bundle signed before the running one (a rollback needs `policy apply --rollback`)",
    Reason.POLICY_NOT_STORED: "policy bundle not applied: it could not be stored in the agent's state directory",
    Reason.RESEND_CHANGED: "kept file to re-send after an outer restart changed or vanished",
    Reason.RESEND_TOO_LATE: "kept file too old to re-send after an outer restart (outside the replay window)",
    Reason.SIP_UNKNOWN_DEVICE: "SIP REGISTER or MESSAGE from a device ID no [[signaling.device]] names (403)",
    Reason.WRONG_PASSWORD: "SIP REGISTER whose digest answer does not verify with the device's password (403)",
    Reason.NONCE_REPLAY: "SIP REGISTER answering a digest nonce already used (a replayed Authorization; 401 afresh)",
    Reason.STALE_NONCE: "SIP REGISTER answering a nonce ferry does not hold: expired, dropped or never issued "
                        "(401 stale=true afresh)",
    Reason.NOT_REGISTERED: "SIP MESSAGE from a configured device that is not registered, or from another address "
                           "than its registration (403)",
    Reason.DEVICE_MISMATCH: "MANSCDP DeviceID that is neither the sending device nor one of its catalog channels (403)",
    Reason.BAD_MANSCDP: "MANSCDP body refused by the hardened parser: DTD, entity, XML bomb, depth, charset, "
                        "schema (400)",
    Reason.UNSUPPORTED_CONTENT_TYPE: "SIP MESSAGE whose body is not Application/MANSCDP+xml (415)",
    Reason.BODY_TOO_LARGE: "SIP MESSAGE body over SIGNALING_MESSAGE_BODY_MAX (413)",
    Reason.UNSUPPORTED_METHOD: "SIP request of a method the outer SIP side does not serve (405)",
    Reason.SIGNALING_MALFORMED: ("signaling object whose MANSCDP XML does not parse again on the inner side, "
                                 "or differs from its header (root, CmdType, device ID)"),
    Reason.SIGNALING_UNMAPPED: ("device ID with no inner ID in the inner agent's [signaling.id_map]: never shown "
                                "to the inner platform under its outer ID"),
    Reason.PLATFORM_UNAVAILABLE: ("message for the inner GB/T 28181 platform not delivered: ferry not registered, "
                                  "or the platform did not answer"),
    Reason.PLATFORM_REFUSED: ("the inner GB/T 28181 platform refused ferry's registration (403, wrong password) "
                              "or a message"),
    Reason.PLATFORM_REQUEST_REFUSED: ("SIP request on ferry's inner SIP endpoint refused: not from the configured "
                                      "platform, malformed, or a query ferry cannot answer"),
    Reason.MALFORMED_SIP: ("SIP message, SDP body or digest header that does not parse or breaks a limit "
                           "(RFC 3261 grammar, sizes in ferry/limits.py)"),
    Reason.SIP_AUTH_FAILED: "SIP request whose digest credentials do not verify (password, realm, nonce, qop)",
    Reason.UNKNOWN_CAMERA: "INVITE for an ID ferry maps to no outer device, or one the policy names in no source (404)",
    Reason.BAD_OFFER: "INVITE whose SDP offer does not parse or is not live PS video the platform receives (400/488)",
    Reason.VIEWERS_BUSY: "INVITE over [media] max_viewers or max_viewers_per_device, or no free media port (486)",
    Reason.NO_STREAM: "INVITE whose camera's stream did not bring a key frame within [media] invite_timeout (408)",
    Reason.NOT_SUPPORTED: ("request a live session does not take: re-INVITE other than a session refresh (488), INFO "
                           "playback control (405), a Session-Expires under ferry's Min-SE (422)"),
    Reason.VIEWER_LOST: ("a viewer reaped: its platform lost (keepalives unanswered, registration ended), its UDP "
                         "RTP port unreachable (ICMP) for INNER_MEDIA_UNREACHABLE_FOR, its TCP connection closed, or "
                         "its RFC 4028 session not refreshed: ferry sent BYE"),
    Reason.BAD_REQUEST: ("reverse request outside its closed schema: unknown request, device ID not 20 digits, "
                         "operator name, unknown or malformed parameter"),
    Reason.UNKNOWN_DEVICE: "reverse request for a device that no devices source of the policy names",
    Reason.UNSERVED: "reverse request allowed, but no handler serves that request on the outer agent",
    Reason.HANDLER_FAILED: "reverse request allowed, its handler on the outer agent failed (logged)",
    Reason.NO_CONTACT: "camera to INVITE that is not registered and has no configured contact ([media.camera] contact)",
    Reason.NO_MEDIA_PORT: "no free port in [media] port_range, or the port could not be opened, for a camera's stream",
    Reason.INVITE_REFUSED: "the camera answered ferry's INVITE with an error status (3xx-6xx)",
    Reason.INVITE_TIMEOUT: "no final answer to ferry's INVITE within [media] invite_timeout",
    Reason.BAD_ANSWER: ("the camera's 200 to the INVITE has no usable SDP answer (parse error, another SSRC or "
                        "transport)"),
    Reason.NO_MEDIA: "no RTP of the offered SSRC within [media] media_timeout after the ACK: ferry sent BYE",
    Reason.MEDIA_LOST: "a camera's stream went silent (its ingest stream ended): ferry sent BYE",
    Reason.CAMERA_BYE: "the camera ended the video dialog (BYE): stream_stopped",
}
