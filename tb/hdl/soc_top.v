// The engine behind its DMA front end (convcore_dma, exported from rtl/dma_engine.py) with its
// memory (axi_ram.v) on the m_axi port: a whole accelerator SoC for simulation at HDL speed.
// Verilog-2005, Icarus Verilog 11 and Verilator 5; no delays, so a C++ main may clock it.
//
// Ports (stable: tb/hdl/tb_soc.v and C++ harnesses drive them):
//   clk            in   clock (every flop on its rising edge)
//   rst            in   synchronous reset, active high (hold it a few cycles)
//   s_axil_*       AXI4-Lite subordinate, exactly convcore_dma's: 9-bit addresses
//                  (awaddr, araddr), 32-bit data; awprot/arprot 3 bits, wstrb 4 bits,
//                  bresp/rresp 2 bits; the engine's registers at 0x000, the layer queue's at
//                  0x100 (rtl/dma_regs.py: Q_CTRL 0x100, Q_STATUS 0x104, Q_HEAD 0x108,
//                  Q_IRQ_ENABLE 0x114, Q_CYCLES 0x120..0x127)
//   irq            out  high while the queue has ended and Q_IRQ_ENABLE is set
//   dump           in   high at a rising edge: the RAM writes itself to +dump=<file>
//                       ($writememh, DATA_WIDTH-bit words a line)
// Plusargs: +mem=<file> loads the RAM at time 0 ($readmemh; sim/memory_image.py writes it),
// +dump=<file> names the dump.
//
// DATA_WIDTH must be the bus width convcore_dma was exported with (DmaEngine(bus_width=...),
// 64 for configuration dma); the RAM holds 2**RAM_ADDR_WIDTH bytes from address 0 (beyond:
// DECERR); READ_LATENCY: cycles from a read address to its first beat.
module soc_top #(
  parameter DATA_WIDTH     = 64,
  parameter RAM_ADDR_WIDTH = 20,
  parameter READ_LATENCY   = 0
) (
  input  wire        clk,
  input  wire        rst,
  input  wire [8:0]  s_axil_awaddr,
  input  wire [2:0]  s_axil_awprot,
  input  wire        s_axil_awvalid,
  output wire        s_axil_awready,
  input  wire [31:0] s_axil_wdata,
  input  wire [3:0]  s_axil_wstrb,
  input  wire        s_axil_wvalid,
  output wire        s_axil_wready,
  output wire [1:0]  s_axil_bresp,
  output wire        s_axil_bvalid,
  input  wire        s_axil_bready,
  input  wire [8:0]  s_axil_araddr,
  input  wire [2:0]  s_axil_arprot,
  input  wire        s_axil_arvalid,
  output wire        s_axil_arready,
  output wire [31:0] s_axil_rdata,
  output wire [1:0]  s_axil_rresp,
  output wire        s_axil_rvalid,
  input  wire        s_axil_rready,
  output wire        irq,
  input  wire        dump
);

  localparam ID_WIDTH = 2;        // rtl/dma_engine.py ID_WIDTH
  localparam STRB_WIDTH = DATA_WIDTH / 8;

  wire [ID_WIDTH-1:0]   awid, bid, arid, rid;
  wire [31:0]           awaddr, araddr;
  wire [7:0]            awlen, arlen;
  wire [2:0]            awsize, arsize, awprot, arprot;
  wire [1:0]            awburst, arburst, bresp, rresp;
  wire [3:0]            awcache, arcache;
  wire                  awvalid, awready, wlast, wvalid, wready, bvalid, bready;
  wire                  arvalid, arready, rlast, rvalid, rready;
  wire [DATA_WIDTH-1:0] wdata, rdata;
  wire [STRB_WIDTH-1:0] wstrb;

  convcore_dma engine (
    .clk(clk), .rst(rst),
    .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(s_axil_awprot),
    .s_axil_awvalid(s_axil_awvalid), .s_axil_awready(s_axil_awready),
    .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(s_axil_wstrb), .s_axil_wvalid(s_axil_wvalid),
    .s_axil_wready(s_axil_wready),
    .s_axil_bresp(s_axil_bresp), .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready),
    .s_axil_araddr(s_axil_araddr), .s_axil_arprot(s_axil_arprot),
    .s_axil_arvalid(s_axil_arvalid), .s_axil_arready(s_axil_arready),
    .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
    .s_axil_rready(s_axil_rready),
    .m_axi_awid(awid), .m_axi_awaddr(awaddr), .m_axi_awlen(awlen), .m_axi_awsize(awsize),
    .m_axi_awburst(awburst), .m_axi_awcache(awcache), .m_axi_awprot(awprot),
    .m_axi_awvalid(awvalid), .m_axi_awready(awready),
    .m_axi_wdata(wdata), .m_axi_wstrb(wstrb), .m_axi_wlast(wlast), .m_axi_wvalid(wvalid),
    .m_axi_wready(wready),
    .m_axi_bid(bid), .m_axi_bresp(bresp), .m_axi_bvalid(bvalid), .m_axi_bready(bready),
    .m_axi_arid(arid), .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize),
    .m_axi_arburst(arburst), .m_axi_arcache(arcache), .m_axi_arprot(arprot),
    .m_axi_arvalid(arvalid), .m_axi_arready(arready),
    .m_axi_rid(rid), .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast),
    .m_axi_rvalid(rvalid), .m_axi_rready(rready),
    .irq(irq)
  );

  axi_ram #(
    .ADDR_WIDTH(RAM_ADDR_WIDTH), .DATA_WIDTH(DATA_WIDTH), .ID_WIDTH(ID_WIDTH),
    .READ_LATENCY(READ_LATENCY)
  ) ram (
    .clk(clk), .rst(rst), .dump(dump),
    .s_axi_awid(awid), .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize),
    .s_axi_awburst(awburst), .s_axi_awcache(awcache), .s_axi_awprot(awprot),
    .s_axi_awvalid(awvalid), .s_axi_awready(awready),
    .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid),
    .s_axi_wready(wready),
    .s_axi_bid(bid), .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
    .s_axi_arid(arid), .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize),
    .s_axi_arburst(arburst), .s_axi_arcache(arcache), .s_axi_arprot(arprot),
    .s_axi_arvalid(arvalid), .s_axi_arready(arready),
    .s_axi_rid(rid), .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast),
    .s_axi_rvalid(rvalid), .s_axi_rready(rready)
  );
endmodule
