from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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
    __slots__ = ("dtype", "shape", "name")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    name: str
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., name: _Optional[str] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("spec", "data")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    spec: TensorSpec
    data: bytes
    def __init__(self, spec: _Optional[_Union[TensorSpec, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("protocol_version", "sender", "round", "kind", "cluster", "meta", "signature", "recipient", "relayed_by", "relay_signature")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    RELAYED_BY_FIELD_NUMBER: _ClassVar[int]
    RELAY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    sender: str
    round: int
    kind: MessageKind
    cluster: int
    meta: _containers.ScalarMap[str, str]
    signature: bytes
    recipient: str
    relayed_by: str
    relay_signature: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., sender: _Optional[str] = ..., round: _Optional[int] = ..., kind: _Optional[_Union[MessageKind, str]] = ..., cluster: _Optional[int] = ..., meta: _Optional[_Mapping[str, str]] = ..., signature: _Optional[bytes] = ..., recipient: _Optional[str] = ..., relayed_by: _Optional[str] = ..., relay_signature: _Optional[bytes] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("header", "tensors")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("header", "specs", "data", "total_bytes")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    header: Header
    specs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    data: bytes
    total_bytes: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., specs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("accepted", "detail")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    detail: str
    def __init__(self, accepted: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_id", "round", "model_digest", "phase", "completed_round")
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
    def __init__(self, node_id: _Optional[str] = ..., round: _Optional[int] = ..., model_digest: _Optional[str] = ..., phase: _Optional[str] = ..., completed_round: _Optional[int] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("requester", "round", "digest", "issued_at_ms", "recipient", "signature")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    requester: str
    round: int
    digest: str
    issued_at_ms: int
    recipient: str
    signature: bytes
    def __init__(self, requester: _Optional[str] = ..., round: _Optional[int] = ..., digest: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., recipient: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...
