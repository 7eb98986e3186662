"""Every size, rate and time limit of ferry, in one place.

Parsers and state machines import their bounds from here so that a reviewer
can see at a glance how much memory and time untrusted input can cost.
"""

# --- link datagrams -------------------------------------------------------
DATAGRAM_MAX = 1472            # UDP payload on a 1500-byte Ethernet MTU (IPv4)
DATAGRAM_MIN = 32
FEC_K = 16                     # source symbols per block
FEC_M = 4                      # repair symbols per block
FEC_K_MAX = 64
FEC_M_MAX = 32
BLOCK_MAX = 1 << 20            # largest sealed block accepted (bytes)

# --- receiver state -------------------------------------------------------
REPLAY_WINDOW = 4096           # blocks behind the highest seen that are still accepted
PENDING_BLOCKS_MAX = 1024      # partially received blocks held at once
BLOCK_TIMEOUT = 2.0            # seconds a partial block may wait for more symbols
OBJECT_MAX = 64 << 20          # largest canonical object (bytes, serialized)
PENDING_OBJECTS_MAX = 256      # objects in reassembly at once
PENDING_OBJECT_BYTES_MAX = 512 << 20
OBJECT_TIMEOUT = 10.0          # seconds an incomplete object may wait

# --- keys -----------------------------------------------------------------
KEY_LIFETIME = 3600.0          # rotate the SM4 session key at least this often (s)
KEY_LIFETIME_MIN = 10.0        # ... the shortest lifetime an operator may configure ([link] key_lifetime)
KEY_BYTES_MAX = 64 << 30       # ... and after this many sealed bytes
KEY_OVERLAP = 30.0             # old epoch still accepted this long after a new one
ANNOUNCE_INTERVAL = 1.0        # repeat the current key announcement (s)
ANNOUNCE_REPEAT_ON_ROTATE = 3  # extra copies sent right after a rotation
ANNOUNCEMENT_MAX = 1024        # bytes of a serialized announcement
DELIVERED_IDS_MAX = 1_000_000  # object IDs the inner agent remembers as delivered (replay window, lanes/delivered.py)
JOURNAL_SLACK = 100_000         # delivered-object journal records beyond twice the live ones before it is compacted
STATE_SAVE_INTERVAL = 1.0      # the inner agent saves its link state (highest blocks opened) at most this often (s)
CLOCK_SKEW = 300.0             # tolerated difference between outer and inner clocks (s)
RECOVERY_SCAN_MARGIN = 3600.0  # inner start: the trail is read back to this long before the oldest leftover (s)

# --- heartbeats -----------------------------------------------------------
HEARTBEAT_INTERVAL = 1.0
LINK_DEAD_AFTER = 5.0          # no heartbeat for this long: the link is reported dead

# --- files lane -----------------------------------------------------------
FILE_MAX = 32 << 20            # hard ceiling whatever the policy says
FILE_NAME_MAX = 200            # bytes of UTF-8
SPOOL_SETTLE = 1.0             # a spool file must be unchanged this long to be complete (s)
SPOOL_SCAN_INTERVAL = 0.5
# image re-encoding (ferry.lanes.cdr, rules with reencode_images): width x height read from the
# header and refused above this before anything is decoded; also Pillow's MAX_IMAGE_PIXELS
IMAGE_PIXELS_MAX = 40_000_000  # 40 megapixels: at most 160 MB of RGBA while decoding
SPOOL_BUSY_WAIT_MIN = 0.5      # s: a spool file found still being written waits at least this (or settle) ...
SPOOL_BUSY_WAIT_MAX = 30.0     # ... doubling each time it is found so again, up to this (or settle)
SPOOL_WAITING_NAMES = 10_000   # spool names recorded as waiting (spool_waiting) remembered per agent run
ZIP_END_CANDIDATES = 16        # end-of-central-directory signatures tried, last first (codecs/format_end)
KEEP_AFTER_SENT = 5.0          # s: a sent file is kept this long after its last datagram left ([files] keep_after_sent)
KEEP_AFTER_SENT_MAX = 86400.0  # ... at most a day: a kept file is re-sent only within its replay window anyway
RESEND_MARGIN = 30.0           # s: an object is re-sent only while created + CLOCK_SKEW is this far ahead
KEPT_JOURNAL_SLACK = 4096      # outer sent journal: lines beyond the live entries before it is compacted

# --- audit ----------------------------------------------------------------
AUDIT_CHECKPOINT_EVERY = 1000  # records between signed checkpoints
AUDIT_CHECKPOINT_INTERVAL = 60.0
AUDIT_CHECKPOINT_POLL = 1.0    # s: the agents' checkpoint timer looks at least this often
AUDIT_RECORD_MAX = 64 << 10    # bytes of one JSON line
AUDIT_RETRY_INTERVAL = 1.0     # while failed closed, retry writing this often
# Link refusal records (datagrams_dropped, block_refused, announcement_refused) written per
# (event, code) per window; the rest are counted in one audit_suppressed record per window
# (ferry.audit.budget). Inner agent: [audit] refusals_per_reason_per_hour.
AUDIT_REFUSALS_PER_REASON_PER_HOUR = 60   # the first minute of each kind of attack in full (drops: 1 a second)
AUDIT_REFUSALS_PER_REASON_PER_HOUR_MAX = 1_000_000   # the most the configuration accepts
AUDIT_REFUSAL_WINDOW = 3600.0  # s: the window of that cap
# Forwarding to a syslog server ([audit.forward], ferry.agents.forwarder). A record counts as
# delivered once the server's TCP acknowledged it and the connection was still open
# FORWARD_SETTLE s later; at most FORWARD_WINDOW records are ever sent and not yet delivered, so a
# restart or reconnect re-sends (duplicates) at most that many.
FORWARD_SETTLE = 1.0           # s
FORWARD_WINDOW = 20_000        # records: with FORWARD_SETTLE, about 10,000 records/s at most (measured)
FORWARD_BATCH_BYTES = 256 << 10   # bytes written to the socket per loop turn
FORWARD_POLL = 0.2             # s: the forwarder looks at the trail file this often when idle
FORWARD_BACKOFF_MIN = 0.5      # s: first reconnect delay, doubled up to
FORWARD_BACKOFF_MAX = 30.0     # s
FORWARD_CONNECT_TIMEOUT = 10.0  # s: TCP connect plus TLS handshake

# --- policy ---------------------------------------------------------------
POLICY_FILE_MAX = 4 << 20

# --- ferry.policy and ferry.lanes.files -----------------------------------
POLICY_FILES_MAX = 16          # YAML files in one policy directory
POLICY_DEPTH_MAX = 32          # nesting of YAML collections in a policy file
POLICY_RULES_MAX = 4096        # rules in one policy
FILE_SNIFF_HEAD = 4096         # bytes examined for magic numbers
OUTPUT_NAME_CANDIDATES_MAX = 1000  # "stem (n).ext" names tried before giving up

# --- wire (ferry/wire) ----------------------------------------------------
PENDING_SYMBOL_BYTES_MAX = 64 << 20  # symbol bytes held in partial blocks at once
KEY_WAIT = 3.0                 # a complete block of an unknown epoch waits this long for its key (s)
PENDING_UNKNOWN_EPOCH_BYTES_MAX = 8 << 20  # their symbol bytes (apart from PENDING_SYMBOL_BYTES_MAX)
PENDING_UNKNOWN_EPOCH_MAX = 256  # partial blocks of not-yet-announced epochs held at once
ANNOUNCE_VERIFY_RATE = 5.0     # SM2 verifications of new announcements per second (burst the same)
REFUSAL_EVENT_RATE = 20.0      # BlockRefused/AnnouncementRefused events per second (burst the same)
DROP_EVENT_INTERVAL = 1.0      # at most one DatagramsDropped event per reason per interval (s)
RECENT_MAX = 8192              # remembered recently completed/lost/delivered blocks and objects
LOSS_REPORTS_PER_CALL = 4096   # BlockLost events produced per call before yielding to the timer

# --- receiver state (ferry/wire, issue 9) -----------------------------------
REFUSED_RECENT_MAX = 1024      # block numbers remembered as refused replays (one BlockRefused each)
INTERNAL_ERRORS_LOGGED = 64    # distinct receiver bugs logged with a traceback (and alarmed) once each
LATE_JOIN_AGE_MARGIN = 1.0     # s: a receiver this much younger than an epoch still saw its first block
LOSS_SCAN_BLOCKS = 2 * REPLAY_WINDOW  # blocks of a gap looked at one by one (pending ones lie near the window)
ANNOUNCEMENTS_KEPT = 4         # exact announcement datagrams remembered per epoch (the cheap repeat check)
FEC_DRIVERS_CACHED = 16        # pyeclib drivers kept, one per (k, m)
FEC_TEMPLATES_CACHED = 64      # pyeclib fragment-header templates kept, one per (k, m, sealed_len)

# --- ferry.policy.suite / lint / diff (policy tooling) ----------------------
POLICY_TEST_FILES_MAX = 64     # YAML files in a policy's tests/ folder
POLICY_TEST_CASES_MAX = 10000  # cases in one test file
POLICY_DIFF_LINES_MAX = 2000   # changed verdicts listed by `policy diff` before summarizing

# --- ferry.policy engine v2 (sources, lanes, windows, rates) ---------------
POLICY_SOURCES_MAX = 20000     # sources in one policy
POLICY_LIST_MAX = 100000       # entries in one list of a policy (device IDs, networks, ...)
POLICY_MEMO_MAX = 200000       # memoized device IDs / addresses per plan (cleared when full)
RATE_STATE_MAX = 65536         # (rule, source) token buckets a RateLimiter keeps (LRU)
VIDEO_DIMENSION_MAX = 16384    # largest width/height a policy may allow
VIDEO_BITRATE_MAX_KBPS = 1000000
VIEW_PICTURES_MAX = 64         # pictures per view-library object a policy may allow
VIEW_PICTURE_BYTES_MAX = 32 << 20
SIGNALING_BODY_MAX = 1 << 20   # MANSCDP body bytes a policy may allow

# --- signed policy bundles and hot reload (ferry.policy.bundle, ferry.mgmt) ---
POLICY_BUNDLE_MAX = 16 << 20     # bytes of a serialized bundle (file or gRPC message)
POLICY_BUNDLE_FILES_MAX = 256    # files in one bundle (top-level *.yaml plus tests/*.yaml)
POLICY_RELOAD_GRACE = 60.0       # inner: objects sealed under the previous hash still accepted (s)
MGMT_CALL_TIMEOUT = 30.0         # client deadline of one management call (s)
MGMT_HEALTH_INTERVAL = 0.5       # the health service re-reads link and trail state this often (s)
AUDIT_TAIL_MAX = 1000            # records TailAudit sends from the end of the trail (at most)
AUDIT_TAIL_READ_MAX = 8 << 20    # bytes TailAudit reads back from the end of the trail (at most)
AUDIT_TAIL_POLL = 0.25           # TailAudit --follow looks for new records this often (s)
AUDIT_TAIL_FOLLOW_MAX = 24 * 3600.0   # one following TailAudit call ends after this long (s)
AUDIT_TAIL_FOLLOWERS_MAX = 8     # TailAudit calls following one agent's trail at once
# Supersedes POLICY_RULES_MAX for format v1 policies: issue 4 requires policies of
# 10,000 device rules (bench/policy.py). POLICY_RULES_MAX is no longer used by ferry.policy.
POLICY_RULES_MAX_V1 = 65536

# --- ferry.codecs: RTP, RFC 4571, RFC 6184/7798 (V1) ------------------------
RTP_REORDER_CAPACITY = 512     # packets a ReorderBuffer holds (sequence numbers ahead of the next expected)
RTP_REORDER_DELAY = 0.2        # seconds a gap may wait for a late packet before it is reported lost
RFC4571_FRAME_MAX = 65535      # largest RFC 4571 frame (the 16-bit length field's own ceiling)
RFC4571_BUFFER_MAX = 4 * 65537 # bytes a Deframer buffers before refusing more input
RTP_ACCESS_UNIT_MAX = 8 << 20  # bytes of NAL units in one depacketized access unit
RTP_ACCESS_UNIT_NALS_MAX = 1024  # NAL units in one depacketized access unit

# --- ferry.codecs video (mpeg_ps, nal, h264, h265, access_unit) -----------
VIDEO_MAX_WIDTH = 8192         # luma samples, after cropping
VIDEO_MAX_HEIGHT = 8192
VIDEO_MAX_FRAME_RATE = 1000.0  # above this the SPS timing info is ignored (frame_rate 0)
NAL_MAX = 8 << 20              # bytes of one NAL unit (Annex B splitter buffer)
PARAMETER_SET_MAX = 4096       # bytes of a VPS/SPS/PPS NAL unit
ACCESS_UNIT_MAX = 16 << 20     # bytes of one access unit (all its NAL units)
ACCESS_UNIT_NALS_MAX = 1024    # NAL units in one access unit
PS_PSM_MAX = 1018              # program_stream_map_length (ISO/IEC 13818-1 §2.5.4.2)
PS_PES_PENDING_MAX = 4096      # PES starts remembered for PTS-to-access-unit matching
PS_STREAMS_MAX = 32            # elementary streams tracked by one demuxer

# --- ferry.lanes.transcode (VT) ---------------------------------------------
TRANSCODE_INPUT_FACTOR = 4     # an SPS/picture larger than this many times the size caps is refused before decoding
TRANSCODE_TARGET_SHARE = 0.85  # average bitrate the encoder aims at, as a share of the cap (the cap is its VBV ceiling)

# --- ferry.lanes.video and the video agents (VX) ------------------------------
VIDEO_BITRATE_WINDOW = 2.0     # seconds of media time (pts) over which a stream's bitrate is measured
VIDEO_BITRATE_WALL_WINDOW = 5.0  # seconds of arrival time over which the same is measured
VIDEO_STREAM_IDLE = 5.0        # seconds without a packet (or access unit, inner) that end a stream
VIDEO_RTP_PAYLOAD_MAX = 1400   # RTP payload bytes per packet the inner agent writes
VIDEO_STREAMS_MAX = 256        # streams one agent tracks at once (TCP connections included)
VIDEO_LOSS_AUDIT_INTERVAL = 10.0  # at most one stream_loss record per stream this often (s)
VIDEO_TCP_QUEUE_MAX = 4 << 20  # bytes an inner TCP output queues while (re)connecting
VIDEO_GATHER_MAX = 65536       # PS bytes of one picture the outer agent gathers before demuxing them
VIDEO_INGEST_TICK = 0.005      # seconds the outer agent lets UDP ingest queue between wake-ups (at most)
VIDEO_SUBMIT_DELAY = 0.005     # seconds the outer agent gathers access units before sealing
VIDEO_INNER_IDLE = 10.0        # inner: seconds without an access unit that end a stream (> VIDEO_STREAM_IDLE)

# --- video lane (ferry.lanes.video, ferry.agents.video_ingest / video_emit) -------
VIDEO_TRANSCODE_QUEUE = 8      # transcode requests outstanding per stream before access units are dropped
VIDEO_REFUSED_ADDRESSES_MAX = 1024  # (entry, address) pairs whose refusal is recorded once; later ones only counted
VIDEO_UDP_READS_PER_WAKE = 256  # datagrams the outer agent drains from one ingest socket per wake-up, at most
VIDEO_UDP_BUFFER = 65536       # bytes of the outer agent's one ingest receive buffer (a datagram's maximum)
VIDEO_UDP_RCVBUF = 8 << 20     # SO_RCVBUF of each UDP ingest socket
VIDEO_RECONNECT_DELAY = 1.0    # seconds between attempts of a TCP client (outer tcp-connect, inner tcp output)
VIDEO_ERRQUEUE_DRAIN = 64      # queued ICMP errors a viewer's UDP socket reads (and drops) per refused send
VIDEO_TRANSCODE_WORKERS = 2    # threads shared by the outer agent's transcoded streams
VIDEO_TRANSCODE_STOP_TIMEOUT = 10.0  # seconds the outer agent waits, when stopping, for transcoders to flush
VIDEO_AUDIT_RETRY = 0.1        # inner: seconds before idle streams are checked again while the trail is down
VIDEO_UDP_SNDBUF = 4 << 20     # SO_SNDBUF of each inner UDP output socket
VIDEO_TCP_READ = 65536         # bytes one read of a video TCP connection takes (outer ingest, inner output)
# outer TCP ingest (issue 12 item 3): a connection is a stream only once it carries a valid RTP packet
VIDEO_TCP_FIRST_BYTE = 5.0     # seconds a new connection may stay silent before it is closed
VIDEO_TCP_FIRST_PACKET = 10.0  # seconds a new connection has to carry its first valid RTP packet
VIDEO_TCP_IDLE = 10.0          # seconds without a valid RTP packet that end a TCP stream (closes the connection)
VIDEO_TCP_PENDING_PER_ENTRY = 64   # connections of one entry waiting for their first RTP packet, at most
VIDEO_TCP_PENDING_PER_ADDRESS = 8  # of those, from one source address, at most
VIDEO_REFUSAL_AUDIT_INTERVAL = 10.0  # aggregated ingest refusals (per entry, address, code): one record this often
# stream anomalies (issue 12 item 4): skipped, stripped and dropped bytes, packets of another SSRC or source
VIDEO_ANOMALY_INTERVAL = 10.0  # at most one stream_anomaly record per stream and code this often (s)
VIDEO_ANOMALY_BYTES = 65536    # bytes skipped/stripped/dropped since the last record that make an anomaly...
VIDEO_ANOMALY_SHARE = 0.2      # ...when they are also at least this share of the payload bytes received meanwhile
VIDEO_ANOMALY_PACKETS = 16     # packets of another SSRC or source address since the last record that make one

# --- the agents' loops (ferry.agents) ---------------------------------------
LINK_READS_PER_WAKE = 64       # inner: link reads (each up to a GRO batch of 64 KiB) per wake-up, at most
HELD_EVENTS_MAX = 10_000       # inner: link events held while the audit trail is down
AUDIT_BACKLOG_MAX = 100_000    # inner: audit records held while the trail is down
INNER_TICK = 0.1               # inner: while the trail is down, look again this often (s)
INNER_TIMER_MIN = 0.005        # inner: the timer task sleeps at least this long (s) ...
INNER_TIMER_MAX = 1.0          # ... and at most this long
PUMP_TICK = 0.2                # outer: the link pump looks at its writer thread at least this often (s)
WRITER_BATCH_DATAGRAMS = 64    # outer: datagrams the link writer paces and sends together, at most
WRITER_BATCH_BYTES = 256 << 10
WRITER_WRITABLE_WAIT = 1.0     # outer: seconds the writer waits for room in the socket buffer, per try

# --- link priority: control datagrams ahead of data (ferry.wire.pacing, the outer link writer) ---
CONTROL_SHARE = 0.02           # share of the link rate control datagrams (announcements, heartbeats) may take first
CONTROL_BURST = 16 << 10       # bytes of control datagrams that may go at once (a rotation's copies and a heartbeat)

# --- Prometheus metrics ([management] metrics, ferry.agents.metrics) ----------
METRICS_SNAPSHOT_TIMEOUT = 2.0  # a scrape waits this long for the event loop's snapshot, then serves the last one

# --- signaling, inner side: ferry as a lower-level platform of the inner GB/T 28181 platform (sig-inner) ---
SIG_ID_MAP_MAX = 100_000       # [signaling.id_map] table entries, at most
SIG_REGISTER_EXPIRES_MIN = 10  # s: register_expires at least this
SIG_KEEPALIVE_MIN = 1.0        # s: keepalive_interval at least this
SIG_KEEPALIVE_LOST = 3         # keepalives unanswered in a row that mark the platform lost (GB/T 28181 §9.6)
SIG_CATALOG_PAGE = 20          # Catalog Response items per MESSAGE, by default ...
SIG_CATALOG_PAGE_MAX = 100     # ... and at most (each MESSAGE stays well under SIP_MESSAGE_MAX)
SIG_DEVICES_MAX = 100_000      # devices the inner side keeps on its canonical list
SIG_T1 = 0.5                   # s: RFC 3261 T1, the first retransmission interval of a request over UDP
SIG_T2 = 4.0                   # s: RFC 3261 T2, the longest one
SIG_TRANSACTION_TIMEOUT = 32.0  # s: a request not answered by then is lost (RFC 3261 Timer F, 64*T1)
SIG_REGISTER_RETRY_MIN = 2.0   # s: re-register after a failure, first wait ...
SIG_REGISTER_RETRY_MAX = 60.0  # ... doubling up to this
SIG_REFRESH_SHARE = 0.5        # refresh a registration when this share of its expiry has passed
SIG_PENDING_MAX = 4096         # requests to the platform in flight (catalog pages, alarms), at most
SIG_CATALOG_WINDOW = 1         # catalog pages sent and not yet answered, at most (the next goes on the 200)
SIG_REFUSAL_AUDIT_INTERVAL = 60.0  # s: a sip_refused record per sending host and code at most this often
SIG_REFUSAL_KEYS_MAX = 1024    # (host, code) pairs whose refusals are being counted, at most
# --- MANSCDP XML bodies, GB/T 28181 Annex A (ferry.codecs.manscdp; issue 13, part "manscdp") ---
MANSCDP_BODY_MAX = 256 << 10   # bytes of one MANSCDP body the parser reads at all (a policy may allow fewer)
MANSCDP_DEPTH_MAX = 8          # element nesting (Response/DeviceList/Item/Info/PTZType is 5)
MANSCDP_ELEMENTS_MAX = 8192    # elements in one body
MANSCDP_ATTRIBUTES_MAX = 4     # attributes of one element
MANSCDP_TEXT_MAX = 4096        # characters of one element's text (all its chunks and CDATA together)
MANSCDP_FREE_TEXT_MAX = 256    # characters of a free-text value (Name, Address, AlarmDescription ...)
MANSCDP_ITEMS_MAX = 1024       # Items in one DeviceList / Alarmstatus
MANSCDP_REPEAT_MAX = 256       # repetitions of one repeatable element (Keepalive Info/DeviceID ...)
MANSCDP_DROPPED_MAX = 32       # names of dropped elements a message keeps (then "...")
MANSCDP_DROPPED_NAME_MAX = 120  # characters of one such name (a path)

# --- SIP / SDP / digest codecs (issue 13, part "sip": ferry.codecs.sip, sip_digest, sdp) ---
SIP_MESSAGE_MAX = 65535        # bytes of one SIP message: start line, headers and body (a UDP datagram at most)
SIP_HEADER_SECTION_MAX = 16384  # bytes of the start line and headers (to the empty line), at most
SIP_LINE_MAX = 4096            # bytes of one start or header line, without its CRLF
SIP_HEADER_COUNT_MAX = 64      # header lines of one message, at most
SIP_BODY_MAX = 65535           # bytes of one message body (Content-Length), at most
SIP_URI_MAX = 512              # characters of one SIP URI
SIP_STREAM_BUFFER_MAX = SIP_HEADER_SECTION_MAX + SIP_BODY_MAX  # bytes a TCP stream parser holds, at most
SIP_PARSE_CACHE_MAX = 16384   # parsed URIs, hosts, Via sent-by and Content-Type values each of ferry.codecs.sip's
                              # caches keeps (least recently used forgotten first)
SIP_PARSE_CACHE_KEY_MAX = 128  # characters of a text those caches key on; a longer one is parsed every time
DIGEST_HEADER_MAX = 2048       # characters of one Authorization / WWW-Authenticate value
DIGEST_PARAMS_MAX = 16         # parameters of one digest challenge or credentials
SDP_MAX = 8192                 # bytes of one SDP body
SDP_LINES_MAX = 64             # lines of one SDP body
SDP_LINE_MAX = 512             # bytes of one SDP line

# --- the agents' SIP transport (ferry.agents.sip_endpoint) ---------------------
SIP_UDP_RCVBUF = 8 << 20      # SO_RCVBUF of a SIP UDP socket (root: past net.core.rmem_max): bursts wait, not drop
SIP_ANSWER_KEEP = 32.0         # s a UDP request's last response is kept to answer its retransmissions (64*T1)
SIP_ANSWERS_MAX = 65536        # such responses kept at most (the oldest forgotten first)
SIP_UDP_BATCH = 64              # SIP datagrams handled per turn of the event loop (then its other work)
SIP_UDP_INBOX_MAX = 32768       # SIP datagrams read and waiting to be handled (beyond: left in the kernel)
SIP_UDP_PEERS_KEPT = 65536      # (host, port) -> Peer names kept for reuse (cleared when full)
SIP_UDP_OUTPUT_MAX = 4 << 20    # bytes of SIP datagrams waiting for room in the send buffer (dropped beyond)
SIP_TCP_CONNECTIONS_MAX = 1024  # SIP TCP connections of one endpoint (accepted and opened), at most
SIP_TCP_READ = 65536           # bytes read from a SIP TCP connection at once
SIP_TCP_IDLE = 300.0           # seconds a SIP TCP connection may stay silent before it is closed
SIP_TCP_OUTPUT_MAX = 1 << 20   # bytes queued for one SIP TCP connection, at most
SIP_TCP_CONNECT_TIMEOUT = 5.0  # seconds to open a SIP TCP connection

# --- outer SIP side (ferry.lanes.signaling.outer, ferry.agents.sip_outer; issue 13 "sig-outer") -----
SIGNALING_DEVICES_MAX = 20_000        # [[signaling.device]] entries (each may register: the registry's bound)
SIGNALING_NONCES_MAX = 40_000         # digest nonces outstanding at once (the oldest is dropped beyond): every
                                      # configured device may be challenged at once (a mass re-registration)
SIGNALING_NONCES_PER_DEVICE = 4       # outstanding nonces of one device (its oldest dropped beyond): a device ID
                                      # asking for challenge after challenge cannot push out the others'
SIGNALING_NONCE_TTL = 60.0            # seconds a nonce may be answered; later: 401 stale=true
SIGNALING_NONCES_USED_MAX = 8192      # answered nonces remembered, to tell a replay from a stale nonce
SIGNALING_TRANSACTIONS_MAX = 8192     # server transactions whose response is kept for retransmissions
SIGNALING_TRANSACTION_TTL = 32.0      # seconds a response is kept (RFC 3261 Timer J: 64 * T1)
SIGNALING_MESSAGE_BODY_MAX = 32768    # MANSCDP body bytes of one MESSAGE ferry reads at most (413 beyond)
SIGNALING_CATALOG_ITEMS_MAX = 4096    # catalog items kept per device
SIGNALING_CATALOG_RETRY = 10.0        # s until a catalog query without a Response Catalog is asked again
SIGNALING_CATALOG_TRIES = 3           # catalog queries to a device that came online, at most
SIGNALING_KEEPALIVE_INTERVAL = 60.0   # a device's keepalive interval unless it says otherwise (GB/T 28181)
SIGNALING_KEEPALIVE_MISSED = 3        # missed keepalives that mark a device offline
SIGNALING_REGISTER_EXPIRES_MIN = 60   # shortest registration accepted (423 Interval Too Brief below)
SIGNALING_REGISTER_EXPIRES_MAX = 86_400   # longest registration granted (a longer ask is cut to it)
SIGNALING_REFUSAL_AUDIT_INTERVAL = 10.0   # aggregated refusals (per code and address): one record this often
SIGNALING_REFUSAL_KEYS_MAX = 1024     # (code, address) pairs aggregated apart; beyond: one per code
SIGNALING_SUBMIT_DELAY = 0.005        # signaling objects gathered this long before they are sealed together
SIGNALING_STATE_SAVE_INTERVAL = 5.0    # s between writes of the outer registrations (when they changed)

# --- media-inner (issue 13 item 3, inner half): the inner platform's INVITEs, viewers of crossing video ----
VIDEO_VIEWERS_MAX = 64         # viewers (INVITEd live sessions) the inner video lane feeds at once, at most
INNER_MEDIA_INVITE_TIMEOUT = 8.0   # seconds from INVITE to the stream's first key frame before 408 (< 32 s, Timer B)
INNER_MEDIA_INVITE_TIMEOUT_MAX = 30.0  # the most an operator may set (the platform's INVITE transaction ends at 32 s)
INNER_MEDIA_MAX_VIEWERS = 16       # default [media] max_viewers
INNER_MEDIA_MAX_VIEWERS_PER_DEVICE = 4  # default [media] max_viewers_per_device
INNER_MEDIA_PORT_TRIES = 8         # media ports tried for one viewer when other programs hold them, then 500
INNER_MEDIA_LINGER = 5.0           # on-demand: seconds after the last viewer's BYE before stop_stream is asked
INNER_MEDIA_ACK_TIMEOUT = 32.0     # seconds (64*T1) a 200 OK is retransmitted waiting for its ACK, then BYE
INNER_MEDIA_T1 = 0.5               # RFC 3261 T1: first retransmission interval of a 200 OK over UDP (doubling, to T2)
INNER_MEDIA_T2 = 4.0               # RFC 3261 T2
INNER_MEDIA_BYE_TIMEOUT = 32.0     # seconds ferry's BYE waits for its answer (64*T1), retransmitted over UDP
INNER_MEDIA_DIALOGS_MAX = 256      # INVITE dialogs (pending and confirmed) kept at once; more are answered 486
INNER_MEDIA_ENDED_MAX = 1024       # ended dialogs remembered to answer retransmissions (Call-ID, branch)
INNER_MEDIA_ENDED_KEEP = 32.0      # seconds an ended dialog is remembered
INNER_MEDIA_STRANGER_INTERVAL = 60.0  # INVITEs from a host that is not the platform: one record per host this often
INNER_MEDIA_STRANGERS_MAX = 1024   # such hosts remembered (the oldest forgotten)
INNER_MEDIA_UNREACHABLE_FOR = 3.0  # s: a UDP viewer whose RTP sends ICMP refuses (port unreachable) this long is reaped
INNER_MEDIA_UNREACHABLE_MIN = 3    # ... and at least this many refused sends in that time
INNER_MEDIA_UNREACHABLE_GAP = 5.0  # s without a refused send: the count starts again (a stray ICMP error reaps nothing)
INNER_MEDIA_MIN_SE = 90            # s: the shortest RFC 4028 session interval ferry takes (its Min-SE; smaller: 422)
INNER_MEDIA_SESSION_EXPIRES_MAX = 86400   # s: a longer Session-Expires is taken as this
# --- reverse lane (ferry.lanes.reverse, ferry.agents.reverse_*; issue 13 "reverse") -----------
REVERSE_OPERATOR_RATE = 1.0    # requests per second per operator (a reverse rule's `rate` overrides) ...
REVERSE_OPERATOR_BURST = 10    # ... and the bucket's depth
REVERSE_DEVICE_RATE = 1.0      # requests per second per device (a reverse rule's `rate` overrides) ...
REVERSE_DEVICE_BURST = 10      # ... and the bucket's depth
REVERSE_OUTER_SLACK = 3        # outer: its buckets are this many tokens deeper (requests held back arrive bunched)
REVERSE_RATE_STATE_MAX = 4096  # operator and device buckets kept per side (LRU: a forgotten one starts full)
REVERSE_PARAMS_MAX = 4         # parameters of one request
REVERSE_PARAM_VALUE_MAX = 64   # characters of one parameter value
REVERSE_OPERATOR_MAX = 64      # characters of an operator name
REVERSE_OBJECT_MAX = 4096      # bytes of a reverse canonical object the outer agent takes
REVERSE_SEEN_MAX = 65536       # outer: request object IDs remembered (a replayed one is refused)
REVERSE_RATE_MBPS = 1.0        # default pace of the reverse link (requests are small)
# --- link: the sender's wall clock stepped (issue 14 item 5, part "link") ------
CLOCK_STEP_MAX = 5.0           # s: wall - monotonic moved this far since the epoch began: the sender rotates its key
CLOCK_STEP_SPAN_MAX = 86400.0  # s: up to this step the new epoch's validity spans both clocks (beyond: the new one)
EPOCH_RESTART_GAP = 16         # outer: a restarted agent's first key epoch is at least the stored newest + this

# --- on-demand / always-on video of outer cameras (issue 13, part "media-outer": ferry.lanes.signaling.outer_media) ---
MEDIA_DEVICES_MAX = 1024       # cameras the outer media part keeps state for (holders, dialogs)
MEDIA_HOLDERS_MAX = 64         # holds (start_stream) on one camera's stream at once
MEDIA_INVITE_TIMEOUT = 10.0    # seconds to the INVITE's final answer (default of [media] invite_timeout)
MEDIA_TIMEOUT = 10.0           # seconds from the ACK to the first RTP packet (default of [media] media_timeout)
MEDIA_RETRY_MIN = 1.0          # always-on: first re-INVITE after a failure (doubling)...
MEDIA_RETRY_MAX = 30.0         # ...up to this many seconds (default of [media] retry_max)
MEDIA_CONNECT_TRIES = 20       # tcp-active: connections to the camera's answered address tried...
MEDIA_CONNECT_DELAY = 0.25     # ...this many seconds apart
MEDIA_REFUSAL_AUDIT_INTERVAL = 10.0   # seconds between media_sip_refused records of one code and address
MEDIA_REFUSAL_KEYS_MAX = 256   # (code, address) pairs counted apart; more share one ("*")
