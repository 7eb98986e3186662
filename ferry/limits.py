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
KEY_BYTES_MAX = 64 << 30       # ... and after this many sealed bytes
KEY_OVERLAP = 30.0             # old epoch still accepted this long after a new one
ANNOUNCE_INTERVAL = 1.0        # repeat the current key announcement (s)
ANNOUNCE_REPEAT_ON_ROTATE = 3  # extra copies sent right after a rotation
ANNOUNCEMENT_MAX = 1024        # bytes of a serialized announcement
CLOCK_SKEW = 300.0             # tolerated difference between outer and inner clocks (s)

# --- heartbeats -----------------------------------------------------------
HEARTBEAT_INTERVAL = 1.0
LINK_DEAD_AFTER = 5.0          # no heartbeat for this long: the link is reported dead

# --- files lane -----------------------------------------------------------
FILE_MAX = 32 << 20            # hard ceiling whatever the policy says
FILE_NAME_MAX = 200            # bytes of UTF-8
SPOOL_SETTLE = 1.0             # a spool file must be unchanged this long to be complete (s)
SPOOL_SCAN_INTERVAL = 0.5

# --- audit ----------------------------------------------------------------
AUDIT_CHECKPOINT_EVERY = 1000  # records between signed checkpoints
AUDIT_CHECKPOINT_INTERVAL = 60.0
AUDIT_RECORD_MAX = 64 << 10    # bytes of one JSON line
AUDIT_RETRY_INTERVAL = 1.0     # while failed closed, retry writing this often

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
PENDING_UNKNOWN_EPOCH_MAX = 256  # partial blocks of not-yet-announced epochs held at once
ANNOUNCE_VERIFY_RATE = 5.0     # SM2 verifications of new announcements per second (burst the same)
REFUSAL_EVENT_RATE = 20.0      # BlockRefused/AnnouncementRefused events per second (burst the same)
DROP_EVENT_INTERVAL = 1.0      # at most one DatagramsDropped event per reason per interval (s)
RECENT_MAX = 8192              # remembered recently completed/lost/delivered blocks and objects
LOSS_REPORTS_PER_CALL = 4096   # BlockLost events produced per call before yielding to the timer
