/* convcore C driver (see convcore.h). */
#include "convcore.h"

#include "convcore_dma.h"
#include "convcore_engine_regs.h"
#include "convcore_queue_regs.h"

#define ENGINE(reg) (CONVCORE_DMA_ENGINE_BASE + CONVCORE_ENGINE_##reg##_OFFSET)
#define QUEUE(reg) (CONVCORE_DMA_QUEUE_BASE + CONVCORE_QUEUE_##reg##_OFFSET)
/* A field of a 32-bit register value. */
#define FIELD(value, map, reg, field) \
    (((value) & map##_##reg##_##field##_MASK) >> map##_##reg##_##field##_SHIFT)
#define QFIELD(value, reg, field) FIELD(value, CONVCORE_QUEUE, reg, field)
#define EFIELD(value, reg, field) FIELD(value, CONVCORE_ENGINE, reg, field)

static const char UNKNOWN[] = "unknown";

uint32_t cc_mmio_read32(void *ctx, uint32_t offset)
{
    return *(volatile uint32_t *)((volatile uint8_t *)ctx + offset);
}

void cc_mmio_write32(void *ctx, uint32_t offset, uint32_t value)
{
    *(volatile uint32_t *)((volatile uint8_t *)ctx + offset) = value;
}

static uint32_t rd(const cc_device *dev, uint32_t offset)
{
    return dev->read32(dev->ctx, offset);
}

static void wr(const cc_device *dev, uint32_t offset, uint32_t value)
{
    dev->write32(dev->ctx, offset, value);
}

/* A 64-bit register: the low word first (the read latches the high word). */
static uint64_t rd64(const cc_device *dev, uint32_t offset)
{
    uint64_t lo = rd(dev, offset);
    return lo | (uint64_t)rd(dev, offset + 4u) << 32;
}

int cc_init(cc_device *dev, cc_read32_fn read32, cc_write32_fn write32, void *ctx)
{
    uint32_t hw;
    if (dev == NULL || read32 == NULL || write32 == NULL)
        return CC_ERR_ARG;
    dev->read32 = read32;
    dev->write32 = write32;
    dev->ctx = ctx;
    hw = rd(dev, QUEUE(Q_HW));
    dev->bus_bytes = QFIELD(hw, Q_HW, Q_BUS_BYTES);
    if (QFIELD(hw, Q_HW, Q_DESC_WORDS) != CONVCORE_DMA_DESC_WORDS || dev->bus_bytes == 0u
        || (dev->bus_bytes & (dev->bus_bytes - 1u)) != 0u)
        return CC_ERR_NO_DEVICE;
    return CC_OK;
}

int cc_init_mmio(cc_device *dev, volatile void *base)
{
    return cc_init(dev, cc_mmio_read32, cc_mmio_write32, (void *)base);
}

static bool queue_busy(const cc_device *dev)
{
    return QFIELD(rd(dev, QUEUE(Q_STATUS)), Q_STATUS, Q_BUSY) != 0u;
}

int cc_read_hw(const cc_device *dev, cc_hw *hw)
{
    uint32_t v;
    if (dev == NULL || hw == NULL)
        return CC_ERR_ARG;
    v = rd(dev, QUEUE(Q_HW));
    hw->bus_bytes = QFIELD(v, Q_HW, Q_BUS_BYTES);
    hw->desc_words = QFIELD(v, Q_HW, Q_DESC_WORDS);
    if (queue_busy(dev))
        return CC_ERR_BUSY;
    v = rd(dev, ENGINE(HW_ARRAY));
    hw->pe = EFIELD(v, HW_ARRAY, HW_PE);
    hw->simd = EFIELD(v, HW_ARRAY, HW_SIMD);
    hw->max_kernel = EFIELD(v, HW_ARRAY, HW_MAX_KERNEL);
    hw->max_stride = EFIELD(v, HW_ARRAY, HW_MAX_STRIDE);
    hw->max_dilation = EFIELD(v, HW_ARRAY, HW_MAX_DILATION);
    v = rd(dev, ENGINE(HW_SIZE));
    hw->max_height = EFIELD(v, HW_SIZE, HW_MAX_HEIGHT);
    hw->max_width = EFIELD(v, HW_SIZE, HW_MAX_WIDTH);
    hw->max_channels = EFIELD(rd(dev, ENGINE(HW_CHANNELS)), HW_CHANNELS, HW_MAX_CHANNELS);
    hw->weight_depth = EFIELD(rd(dev, ENGINE(HW_WEIGHT_DEPTH)), HW_WEIGHT_DEPTH,
                              HW_WEIGHT_DEPTH);
    hw->channel_depth = EFIELD(rd(dev, ENGINE(HW_CHANNEL_DEPTH)), HW_CHANNEL_DEPTH,
                               HW_CHANNEL_DEPTH);
    hw->line_buffer_depth = EFIELD(rd(dev, ENGINE(HW_LINE_BUFFER)), HW_LINE_BUFFER,
                                   HW_LINE_BUFFER_DEPTH);
    v = rd(dev, ENGINE(HW_POOL));
    hw->pool_window_slots = EFIELD(v, HW_POOL, HW_POOL_WINDOW_SLOTS);
    hw->pool_max_stride = EFIELD(v, HW_POOL, HW_POOL_MAX_STRIDE);
    v = rd(dev, ENGINE(HW_PARAMS));
    hw->param_width = EFIELD(v, HW_PARAMS, HW_PARAM_WIDTH);
    hw->packing = EFIELD(v, HW_PARAMS, HW_PACKING) != 0u;
    hw->queued_starts = EFIELD(v, HW_PARAMS, HW_QUEUED_STARTS) != 0u;
    return CC_OK;
}

int cc_queue_start(const cc_device *dev, uint32_t head, bool irq)
{
    if (dev == NULL)
        return CC_ERR_ARG;
    if (queue_busy(dev))
        return CC_ERR_BUSY;
    wr(dev, QUEUE(Q_IRQ_ENABLE), irq ? CONVCORE_QUEUE_Q_IRQ_ENABLE_Q_IRQ_ENABLE_MASK : 0u);
    wr(dev, QUEUE(Q_HEAD), head);
    wr(dev, QUEUE(Q_CTRL), CONVCORE_QUEUE_Q_CTRL_RUN_MASK);
    return CC_OK;
}

static int decode(const cc_device *dev, uint32_t status, cc_queue_status *st)
{
    st->busy = QFIELD(status, Q_STATUS, Q_BUSY) != 0u;
    st->done = QFIELD(status, Q_STATUS, Q_DONE) != 0u;
    st->error = QFIELD(status, Q_STATUS, Q_ERROR);
    st->engine_error = QFIELD(status, Q_STATUS, Q_ENGINE_ERROR);
    st->current = rd(dev, QUEUE(Q_CURRENT));
    st->completed = rd(dev, QUEUE(Q_COMPLETED));
    if (!st->done)
        return CC_RUNNING;
    return st->error == CONVCORE_QUEUE_Q_STATUS_Q_ERROR_NONE ? CC_OK : CC_ERR_QUEUE;
}

int cc_queue_poll(const cc_device *dev, cc_queue_status *st)
{
    if (dev == NULL || st == NULL)
        return CC_ERR_ARG;
    return decode(dev, rd(dev, QUEUE(Q_STATUS)), st);
}

int cc_queue_wait(const cc_device *dev, uint32_t max_polls, cc_queue_status *st)
{
    uint32_t i, status = 0u;
    if (dev == NULL || st == NULL)
        return CC_ERR_ARG;
    for (i = 0u; i < max_polls; i++) {
        status = rd(dev, QUEUE(Q_STATUS));
        if (QFIELD(status, Q_STATUS, Q_DONE) != 0u)
            return decode(dev, status, st);
    }
    (void)decode(dev, status, st);
    return CC_ERR_TIMEOUT;
}

int cc_run_queue(const cc_device *dev, uint32_t head, uint32_t max_polls, cc_queue_status *st)
{
    int rc = cc_queue_start(dev, head, false);
    if (rc != CC_OK)
        return rc;
    return cc_queue_wait(dev, max_polls, st);
}

int cc_run_layer(const cc_device *dev, uint32_t desc, uint32_t max_polls, cc_queue_status *st)
{
    int rc = cc_run_queue(dev, desc, max_polls, st);
    if (rc == CC_OK && st->completed != 1u)
        return CC_ERR_CHAIN;
    return rc;
}

int cc_read_counters(const cc_device *dev, cc_counters *c)
{
    if (dev == NULL || c == NULL)
        return CC_ERR_ARG;
    c->queue_cycles = rd64(dev, QUEUE(Q_CYCLES));
    c->completed = rd(dev, QUEUE(Q_COMPLETED));
    c->cycles = c->mac_cycles = c->starved_cycles = c->stalled_cycles = 0u;
    if (queue_busy(dev))
        return CC_ERR_BUSY;
    c->cycles = rd64(dev, ENGINE(CYCLES));
    c->mac_cycles = rd64(dev, ENGINE(MAC_CYCLES));
    c->starved_cycles = rd64(dev, ENGINE(STARVED_CYCLES));
    c->stalled_cycles = rd64(dev, ENGINE(STALLED_CYCLES));
    return CC_OK;
}

#define CASE_NAME(name, code, text) case code: return #name;
#define CASE_TEXT(name, code, text) case code: return text;

const char *cc_queue_error_name(uint32_t error)
{
    switch (error) {
    CONVCORE_DMA_QUEUE_ERRORS(CASE_NAME)
    default: return UNKNOWN;
    }
}

const char *cc_queue_error_text(uint32_t error)
{
    switch (error) {
    CONVCORE_DMA_QUEUE_ERRORS(CASE_TEXT)
    default: return UNKNOWN;
    }
}

const char *cc_engine_error_name(uint32_t error)
{
    switch (error) {
    CONVCORE_DMA_ENGINE_ERRORS(CASE_NAME)
    default: return UNKNOWN;
    }
}

const char *cc_engine_error_text(uint32_t error)
{
    switch (error) {
    CONVCORE_DMA_ENGINE_ERRORS(CASE_TEXT)
    default: return UNKNOWN;
    }
}

const char *cc_rc_text(int rc)
{
    switch (rc) {
    case CC_OK: return "done";
    case CC_RUNNING: return "the queue runs";
    case CC_ERR_ARG: return "a null argument";
    case CC_ERR_NO_DEVICE: return "no convcore queue answers (Q_HW)";
    case CC_ERR_BUSY: return "the queue runs";
    case CC_ERR_TIMEOUT: return "the queue did not end in time";
    case CC_ERR_QUEUE: return "the queue stopped at a descriptor";
    case CC_ERR_CHAIN: return "more than one descriptor ran";
    default: return UNKNOWN;
    }
}
