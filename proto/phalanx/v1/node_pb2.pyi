from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class MessageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_KIND_UNSPECIFIED: _ClassVar[MessageKind]
    MESSAGE_KIND_UPDATE: _ClassVar[MessageKind]
    MESSAGE_KIND_CLUSTER_OUTPUT: _ClassVar[MessageKind]
    MESSAGE_KIND_SHARE: _ClassVar[MessageKind]
    MESSAGE_KIND_PARTIAL_SUM: _ClassVar[MessageKind]
    MESSAGE_KIND_MPC_KEYS: _ClassVar[MessageKind]
    MESSAGE_KIND_MPC_SEED_SHARES: _ClassVar[MessageKind]
    MESSAGE_KIND_MASKED_INPUT: _ClassVar[MessageKind]
    MESSAGE_KIND_UNMASK: _ClassVar[MessageKind]
    MESSAGE_KIND_PING: _ClassVar[MessageKind]
    MESSAGE_KIND_PING_REQ: _ClassVar[MessageKind]
    MESSAGE_KIND_ACK: _ClassVar[MessageKind]
    MESSAGE_KIND_JOIN: _ClassVar[MessageKind]
    MESSAGE_KIND_LEAVE: _ClassVar[MessageKind]
    MESSAGE_KIND_ECHO: _ClassVar[MessageKind]
    MESSAGE_KIND_COLLUDE: _ClassVar[MessageKind]
    MESSAGE_KIND_HELD_DEALERS: _ClassVar[MessageKind]
    MESSAGE_KIND_DEALER_SET: _ClassVar[MessageKind]
    MESSAGE_KIND_MODEL: _ClassVar[MessageKind]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_UINT64: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
MESSAGE_KIND_UNSPECIFIED: MessageKind
MESSAGE_KIND_UPDATE: MessageKind
MESSAGE_KIND_CLUSTER_OUTPUT: MessageKind
MESSAGE_KIND_SHARE: MessageKind
MESSAGE_KIND_PARTIAL_SUM: MessageKind
MESSAGE_KIND_MPC_KEYS: MessageKind
MESSAGE_KIND_MPC_SEED_SHARES: MessageKind
MESSAGE_KIND_MASKED_INPUT: MessageKind
MESSAGE_KIND_UNMASK: MessageKind
MESSAGE_KIND_PING: MessageKind
MESSAGE_KIND_PING_REQ: MessageKind
MESSAGE_KIND_ACK: MessageKind
MESSAGE_KIND_JOIN: MessageKind
MESSAGE_KIND_LEAVE: MessageKind
MESSAGE_KIND_ECHO: MessageKind
MESSAGE_KIND_COLLUDE: MessageKind
MESSAGE_KIND_HELD_DEALERS: MessageKind
MESSAGE_KIND_DEALER_SET: MessageKind
MESSAGE_KIND_MODEL: MessageKind
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_INT64: DType
DTYPE_UINT64: DType
DTYPE_UINT8: DType
DTYPE_INT32: DType

class TensorSpec(_message.Message):
    __slots__ = ("dtype", "name", "shape")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    name: str
    def __init__(self, dtype: DType | str | None = ..., shape: _Iterable[int] | None = ..., name: str | None = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("data", "spec")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    spec: TensorSpec
    data: bytes
    def __init__(self, spec: TensorSpec | _Mapping | None = ..., data: bytes | None = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("cluster", "kind", "meta", "protocol_version", "recipient", "round", "sender", "signature")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    sender: str
    round: int
    kind: MessageKind
    cluster: int
    meta: _containers.ScalarMap[str, str]
    signature: bytes
    recipient: str
    def __init__(self, protocol_version: int | None = ..., sender: str | None = ..., round: int | None = ..., kind: MessageKind | str | None = ..., cluster: int | None = ..., meta: _Mapping[str, str] | None = ..., signature: bytes | None = ..., recipient: str | None = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("header", "tensors")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, header: Header | _Mapping | None = ..., tensors: _Iterable[Tensor | _Mapping] | None = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data", "header", "specs", "total_bytes")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    header: Header
    specs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    data: bytes
    total_bytes: int
    def __init__(self, header: Header | _Mapping | None = ..., specs: _Iterable[TensorSpec | _Mapping] | None = ..., data: bytes | None = ..., total_bytes: int | None = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("accepted", "detail")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    detail: str
    def __init__(self, accepted: bool | None = ..., detail: str | None = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("completed_round", "model_digest", "node_id", "phase", "round")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ROUND_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    round: int
    model_digest: str
    phase: str
    completed_round: int
    def __init__(self, node_id: str | None = ..., round: int | None = ..., model_digest: str | None = ..., phase: str | None = ..., completed_round: int | None = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("digest", "requester", "round")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    requester: str
    round: int
    digest: str
    def __init__(self, requester: str | None = ..., round: int | None = ..., digest: str | None = ...) -> None: ...
