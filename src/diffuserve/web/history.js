// The history of results, kept in this browser's IndexedDB (images as Blobs, which
// localStorage could not hold) and bounded to the newest MAX_ENTRIES.

const DB_NAME = "diffuserve-playground";
const STORE = "history";
export const MAX_ENTRIES = 40;

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

let dbPromise = null;
function db() {
  dbPromise ??= open();
  return dbPromise;
}

/** Entries, newest first. */
export async function list() {
  try {
    const store = (await db()).transaction(STORE).objectStore(STORE);
    const all = await new Promise((resolve, reject) => {
      const req = store.getAll();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return all.reverse();
  } catch {
    return []; // no IndexedDB (a private window in some browsers): no history
  }
}

/** Keep ``entry`` (its ``blob`` included); drop the oldest beyond the bound. */
export async function add(entry) {
  try {
    const database = await db();
    const tx = database.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    store.add(entry);
    const keys = await new Promise((resolve) => {
      const req = store.getAllKeys();
      req.onsuccess = () => resolve(req.result);
    });
    for (const key of keys.slice(0, Math.max(0, keys.length - MAX_ENTRIES))) store.delete(key);
    await done(tx);
  } catch { /* history is a convenience: a full disk must not break the page */ }
}

export async function clear() {
  try {
    const tx = (await db()).transaction(STORE, "readwrite");
    tx.objectStore(STORE).clear();
    await done(tx);
  } catch { /* nothing to clear */ }
}
