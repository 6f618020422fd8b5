// Reference counting for native storages: every Tensor (and every view of it) holds one reference;
// the storage is freed when the last reference is released. Memory is never left to the GC.

import type { NativeStorage } from "@lowbit/kernels";

export class StorageRef {
  readonly storage: NativeStorage;
  /** The storage's device, read once: the native getter builds a new string per call, and every op asks for it. */
  readonly device: string;
  #refs = 1;
  /** External storages (owned by the caller, e.g. a shared file mapping) are never freed here. */
  readonly external: boolean;

  constructor(storage: NativeStorage, external = false) {
    this.storage = storage;
    this.device = storage.device;
    this.external = external;
  }

  get refs(): number {
    return this.#refs;
  }

  retain(): this {
    this.#refs++;
    return this;
  }

  release(): void {
    if (this.#refs <= 0) return;
    this.#refs--;
    if (this.#refs === 0) {
      shared.delete(this.storage);
      if (!this.external) this.storage.dispose();
    }
  }
}

// Storages handed in from outside (Tensor.fromStorage) get one StorageRef each, however many tensors
// view them, so that disposing one view never frees memory another view still reads.
const shared = new WeakMap<NativeStorage, StorageRef>();

/** The StorageRef for an outside storage, with one new reference taken. */
export function adoptStorage(storage: NativeStorage, external: boolean): StorageRef {
  const existing = shared.get(storage);
  if (existing !== undefined && existing.refs > 0) return existing.retain();
  const ref = new StorageRef(storage, external);
  shared.set(storage, ref);
  return ref;
}
