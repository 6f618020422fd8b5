// @lowbit/accelerate: accelerate's big-model inference planning in TypeScript — module sizes (incl.
// bitsandbytes-quantized weights), max_memory parsing and defaults, device maps ("auto", "balanced",
// "balanced_low_0", "sequential", infer_auto_device_map, check_device_map) and the disk offload folder
// format that accelerate reads and writes. Planning needs no memory: models are described by shapes.

export { DeviceMapError, ModelDescriptionError, OffloadError } from "./errors.js";
export type { Logger } from "./log.js";

export {
  canonicalDTypeName,
  dtypeByteSize,
  isIntegerOrBoolDType,
  quantizedByteSize,
  type QuantSpec,
  type QuantizedSizes,
} from "./dtype-size.js";

export {
  buildModelTree,
  findTiedParameters,
  isModelTree,
  type BufferDescription,
  type ModelDescription,
  type ModelInput,
  type ModelTree,
  type ModuleDescription,
  type ModuleNode,
  type NamedEntries,
  type TensorDescription,
  type TensorNode,
  type TreeNode,
} from "./model.js";

export {
  computeModuleSizes,
  getMaxLayerSize,
  getModuleSizeWithTies,
  tensorByteSize,
  sizeContext,
  type MaxLayer,
  type MaxLayerOptions,
  type ModuleSizes,
  type NamedTensorShape,
  type SizeContext,
  type SizeOptions,
  type SizeWithTies,
} from "./sizes.js";

export {
  convertFileSizeToInt,
  detectDeviceInventory,
  deviceString,
  getMaxMemory,
  parseDeviceKey,
  type DeviceId,
  type DeviceInventory,
  type GpuInfo,
  type InventoryOptions,
  type MaxMemory,
  type MaxMemoryInput,
} from "./memory.js";

export {
  checkDeviceMap,
  checkTiedParametersOnSameDevice,
  cleanDeviceMap,
  deviceForName,
  deviceMapToObject,
  expandDeviceMap,
  formatDeviceMap,
  inferAutoDeviceMap,
  normalizeDeviceMap,
  type CheckDeviceMapOptions,
  type DeviceMap,
  type DeviceMapInput,
  type InferAutoDeviceMapOptions,
} from "./device-map.js";

export {
  DEVICE_MAP_STRATEGIES,
  bnbAdjustMaxMemory,
  getBalancedMemory,
  resolveDeviceMap,
  type BalancedBuffer,
  type BalancedMemoryOptions,
  type DeviceMapStrategy,
  type ResolveDeviceMapOptions,
} from "./balanced.js";

export {
  OffloadedWeightsLoader,
  loadOffloadIndex,
  loadOffloadedWeight,
  offloadStateDict,
  offloadWeight,
  saveOffloadIndex,
  type DatIndexEntry,
  type OffloadIndex,
  type OffloadIndexEntry,
  type OffloadedWeightsLoaderOptions,
  type RawWeight,
  type SafetensorsIndexEntry,
} from "./offload.js";

