/**
 * The credit of one subscription as one ledger: messages held plus units
 * reserved by reads and claims in flight never exceed the limit. Every path
 * that frees credit (a release, a reservation given back, a larger limit) goes
 * through {@link CreditLedger.#changed}, which wakes whoever waits for credit:
 * no path can free credit and leave the pull loop parked.
 */
export class CreditLedger {
  #limit: number
  #held = 0
  #reserved = 0
  readonly #onFree: () => void

  /** @param onFree called (synchronously) whenever credit may have come free */
  constructor(limit: number, onFree: () => void) {
    this.#limit = limit
    this.#onFree = onFree
  }

  get limit(): number {
    return this.#limit
  }
  get held(): number {
    return this.#held
  }
  get reserved(): number {
    return this.#reserved
  }
  /** Units neither held nor reserved. */
  get free(): number {
    return this.#limit - this.#held - this.#reserved
  }

  /** Promises `n` units to a read or claim in flight. */
  reserve(n: number): void {
    this.#reserved += n
  }

  /** Gives back units of a reservation that were not used. */
  unreserve(n: number): void {
    if (n <= 0) return
    this.#reserved = Math.max(0, this.#reserved - n)
    this.#onFree()
  }

  /** One message is now held (taken from a reservation when `fromReservation`). */
  hold(fromReservation: boolean): void {
    if (fromReservation && this.#reserved > 0) this.#reserved--
    this.#held++
  }

  /** One message no longer holds credit. */
  release(): void {
    if (this.#held > 0) this.#held--
    this.#onFree()
  }

  setLimit(limit: number): void {
    const grew = limit > this.#limit
    this.#limit = limit
    if (grew) this.#onFree()
  }
}
